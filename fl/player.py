"""`fl player NAME`: one player's TensorFlow gRPC server and its metrics exporter, nothing else of ours.

The server registers our secure-random ops first, so protocol steps placed on this
player can sample masks and shares here. A data owner's files are only read by
pipelines the driver places on this server; no code of ours here opens them.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from fl import secure_random
from fl.cluster import JOB_NAME, Cluster
from fl.errors import InsecureRandomnessError
from fl.metrics import player_exporter

logger = logging.getLogger(__name__)


def serve(name: str, cluster_file: str, insecure_randomness: bool = False) -> None:
    cluster = Cluster.load(cluster_file)
    player = cluster.player(name)
    if not secure_random.try_load():
        if not insecure_randomness:
            raise InsecureRandomnessError(
                f"player {name}: secure-random ops are not built, refusing to serve secure protocols; "
                "run `make install` or pass --insecure-randomness for experiments"
            )
        secure_random.allow_insecure_randomness()
    spec = tf.train.ClusterSpec({JOB_NAME: [p.address for p in cluster.players]})
    server = tf.distribute.Server(spec, job_name=JOB_NAME, task_index=player.index, start=True)
    logger.info("player %s (%s) serving %s at %s", name, player.role, player.device_name, server.target)
    metrics_port = player_exporter.start(cluster, player)
    if metrics_port is not None:
        logger.info("player %s: /metrics on port %d", name, metrics_port)
    print(f"player {name} ({player.role}) ready at {player.address}", flush=True)
    server.join()
