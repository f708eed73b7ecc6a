"""Run inside the driver container: each secure average vs the plaintext average, as JSON."""

import json

import numpy as np
import tensorflow as tf

import fl
from fl.aggregation.registry import make_aggregation
from fl.rounds import CompiledAverage

SIZE = 5000

cluster = fl.connect("/etc/fl/cluster.json")
updates = {}
for i, owner in enumerate(cluster.data_owners):
    with tf.device(owner.device_name):
        updates[owner] = tf.random.stateless_uniform([SIZE], seed=[i, 7], minval=-4.0, maxval=4.0)


def average(name: str) -> tf.Variable:
    """The mean on the output receiver, by the compiled path a round takes."""
    compiled = CompiledAverage(make_aggregation(name, cluster), cluster.data_owners, SIZE)
    if not compiled(updates).accepted:
        raise SystemExit(f"{name} refused the updates")
    return compiled.mean


plaintext = average("plaintext").numpy()
report = {}
for protocol in ("additive", "pond", "aby3"):
    mean = average(protocol)
    report[protocol] = {"max_error": float(np.abs(mean.numpy() - plaintext).max()), "device": mean.device}
print(json.dumps(report))
