"""FL Testbed: federated learning with secure aggregation on a real multi-party tfe cluster."""

import logging as _logging
import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tfe warns at import about its prebuilt ops for TF 2.9.1; fl.secure_random replaces them and reports itself.
_logging.getLogger("tf_encrypted").setLevel(_logging.ERROR)

from fl.aggregation import (  # noqa: E402
    ABY3SecureAverage,
    AdditiveSecureAverage,
    Aggregation,
    PlaintextAverage,
    PondSecureAverage,
)
from fl.cluster import Cluster, Player  # noqa: E402
from fl.connection import connect  # noqa: E402
from fl.data import OwnerData, owner_sources, split_among_players  # noqa: E402
from fl.federated import FederatedLearning  # noqa: E402

__all__ = [
    "ABY3SecureAverage",
    "AdditiveSecureAverage",
    "Aggregation",
    "Cluster",
    "FederatedLearning",
    "OwnerData",
    "PlaintextAverage",
    "Player",
    "PondSecureAverage",
    "connect",
    "owner_sources",
    "split_among_players",
]
