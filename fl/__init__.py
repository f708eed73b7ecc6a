"""FL Testbed: federated learning with secure aggregation on a real multi-party tfe cluster.

The public names load on first use, so commands that never touch TensorFlow (`fl status`,
`fl down`, a player's TLS sidecar) start without importing it.
"""

import importlib as _importlib
import logging as _logging
import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tfe warns at import about its prebuilt ops for TF 2.9.1; fl.secure_random replaces them and reports itself.
_logging.getLogger("tf_encrypted").setLevel(_logging.ERROR)

_PUBLIC = {
    "ABY3SecureAverage": "fl.aggregation.tfe_protocols",
    "AdditiveSecureAverage": "fl.aggregation.additive",
    "Aggregation": "fl.aggregation.base",
    "PlaintextAverage": "fl.aggregation.plaintext",
    "PondSecureAverage": "fl.aggregation.tfe_protocols",
    "Cluster": "fl.cluster",
    "Player": "fl.cluster",
    "connect": "fl.connection",
    "OwnerData": "fl.data",
    "OwnerPipeline": "fl.data.pipelines",
    "shuffled": "fl.data.pipelines",
    "DifferentialPrivacy": "fl.policies",
    "LocalTraining": "fl.policies",
    "RangePolicy": "fl.policies",
    "RoundPolicy": "fl.policies",
    "ServerOptimizer": "fl.policies",
    "Weighting": "fl.policies",
    "results_dir": "fl.experiment",
    "owner_sources": "fl.data",
    "split_among_players": "fl.data",
    "FederatedLearning": "fl.federated",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'fl' has no attribute {name!r}")
    return getattr(_importlib.import_module(_PUBLIC[name]), name)
