"""Run inside the driver container: each secure average vs the plaintext average, as JSON."""

import json

import numpy as np
import tensorflow as tf

import fl
from fl.train import make_aggregation

cluster = fl.connect("/etc/fl/cluster.json")
updates = {}
for i, owner in enumerate(cluster.data_owners):
    with tf.device(owner.device_name):
        updates[owner] = tf.random.stateless_uniform([5000], seed=[i, 7], minval=-4.0, maxval=4.0)
plaintext = make_aggregation("plaintext", cluster).aggregate(updates).numpy()
report = {}
for protocol in ("additive", "pond", "aby3"):
    aggregation = make_aggregation(protocol, cluster)
    average = aggregation.aggregate(aggregation.bound(updates).updates)
    report[protocol] = {"max_error": float(np.abs(average.numpy() - plaintext).max()), "device": average.device}
print(json.dumps(report))
