"""Run inside a compute server's TF container: the curious participant's attack on one victim player.

It connects to the victim exactly as a driver would (addresses from the cluster file that
is mounted in every player), reads the victim's file and writes one there, printing a
marker after each step that succeeds: CONNECTED, READ <bytes>, WROTE. With `pipeline` it
reads the file as an owner pipeline would, a tf.data pipeline placed on the victim, and
prints READ <records>. Its connection
leaves through this player's own sidecar with its valid certificate. Without the mesh all
three markers print; refused, TensorFlow raises or aborts the process.

Usage: attack_from_compute_server.py VICTIM PATH [file|pipeline]
"""

import sys

import tensorflow as tf

from fl.cluster import JOB_NAME, Cluster

victim, path = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else "file"
address = Cluster.load("/etc/fl/cluster.json").player(victim).address
device = f"/job:{JOB_NAME}/replica:0/task:0/device:CPU:0"
tf.config.experimental_connect_to_host([address], job_name=JOB_NAME)
print("CONNECTED", flush=True)
with tf.device(device):
    if mode == "pipeline":
        read = tf.data.TFRecordDataset(path).reduce(tf.constant(0, tf.int64), lambda count, _: count + 1).numpy()
    else:
        read = len(tf.io.read_file(path).numpy())
print(f"READ {read}", flush=True)
with tf.device(device):
    tf.io.write_file("/data/planted-by-attacker", tf.constant("x"))
print("WROTE", flush=True)
