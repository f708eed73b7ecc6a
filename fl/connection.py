"""Connecting the driver to a running cluster as a tfe RemoteConfig."""

from __future__ import annotations

import logging
from pathlib import Path

from fl import secure_random
from fl.cluster import SECTIONS, Cluster, require_reachable

logger = logging.getLogger(__name__)

_connected: Cluster | None = None


def connect(cluster_file: str | Path | None = None, insecure_randomness: bool | None = None) -> Cluster:
    """Check every player answers, then make this process the tfe driver of the cluster.

    Without arguments, the cluster `fl run` gave the script (else `.fl/cluster.json`), with its randomness setting.

    TensorFlow supports one remote cluster per process, so connecting again to the
    same hostmap is a no-op and connecting to a different one is refused.
    """
    global _connected
    from fl import experiment

    cluster = Cluster.load(cluster_file or experiment.cluster_file())
    if insecure_randomness is None:
        insecure_randomness = experiment.insecure_randomness()
    if _connected is not None:
        if _connected.hostmap != cluster.hostmap:
            raise RuntimeError("this process already drives another cluster; use a new process")
        for section in SECTIONS:  # e.g. the dataset `fl split` recorded since
            setattr(_connected, section, getattr(cluster, section))
        return _connected
    if not secure_random.try_load() and insecure_randomness:
        secure_random.allow_insecure_randomness()
    require_reachable(cluster.players)
    import tf_encrypted as tfe

    config = tfe.RemoteConfig(cluster.hostmap)
    tfe.set_config(config)
    config.connect_servers()
    logger.info("driving cluster %s", cluster.hostmap)
    _connected = cluster
    return cluster


def current() -> Cluster:
    """The cluster this process drives."""
    if _connected is None:
        raise RuntimeError("not connected to a cluster: call fl.connect(cluster_file) first")
    return _connected


def refresh() -> None:
    """After a player restarted: re-announce the cluster so TF re-creates that player's context.

    TF compares each worker's incarnation and rebuilds only the restarted ones;
    state on the others (the model owner's weights) survives.
    """
    import tf_encrypted as tfe

    cluster = current()
    require_reachable(cluster.players)
    tfe.get_config().connect_servers()
