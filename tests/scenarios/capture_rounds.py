"""Run inside the driver container while the test captures the networks: one plaintext and one additive round,
and one round of training through a pipeline function per owner that parses the owner's shard.

Protocol: warms both aggregations up, prints READY and waits for /tmp/capture-go (the
captures are running by then); runs the two rounds three times, prints DONE and waits for
/tmp/capture-stopped; then fetches the additive round's seeds (after the captures, so the
only time they crossed a network during them was between the owners) and prints them:
SEEDS and a JSON list. The rounds are compiled, as in training; to know the seeds, this
script makes each one eagerly on its owner while the averaged rounds are traced, so every
such round of this run reuses them (never outside a test); the training round makes its own.
Each owner's update is `stateless_uniform([SIZE], seed=[index, UPDATE_SEED])`,
which the test recomputes to know every byte of it.

Usage: capture_rounds.py SIZE UPDATE_SEED
"""

import json
import sys
import time
from pathlib import Path

import tensorflow as tf

import fl
from fl import secure_random
from fl.aggregation.registry import make_aggregation
from fl.rounds import CompiledAverage

size, update_seed = int(sys.argv[1]), int(sys.argv[2])
CAPTURED_ROUNDS = 3  # each seed crosses once a round: a packet the capture drops cannot hide it
cluster = fl.connect("/etc/fl/cluster.json")
updates = {}
for index, owner in enumerate(cluster.data_owners):
    with tf.device(owner.device_name):
        updates[owner] = tf.random.stateless_uniform([size], seed=[index, update_seed], minval=-4.0, maxval=4.0)

seeds: list[tf.Tensor] = []
make_seed = secure_random.secure_seed


def recorded_seed() -> tf.Tensor:
    with tf.init_scope():  # out of the graph being traced, still on the owner's device
        seed = make_seed()
    seeds.append(seed)
    return seed


secure_random.secure_seed = recorded_seed
plaintext, additive = (
    CompiledAverage(make_aggregation(name, cluster), cluster.data_owners, size) for name in ("plaintext", "additive")
)
SCHEMA = {"x": tf.io.FixedLenFeature([8, 8, 1], tf.float32), "y": tf.io.FixedLenFeature([], tf.int64)}


def records(owner: fl.Player, seed: tf.Tensor) -> tf.data.Dataset:
    parsed = tf.data.TFRecordDataset(f"{owner.data_dir}/train.tfrecord").map(
        lambda record: tf.io.parse_single_example(record, SCHEMA)
    )
    return fl.shuffled(parsed.map(lambda example: (example["x"], example["y"])), seed).batch(32)


with fl.FederatedLearning(cluster.model_owner, make_aggregation("additive", cluster)):
    model = tf.keras.Sequential([tf.keras.layers.Flatten(input_shape=(8, 8, 1)), tf.keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")


def averaged_rounds() -> None:
    for compiled in (plaintext, additive):
        if not compiled(updates).accepted:
            raise SystemExit("a round was refused")


def trained_round() -> None:
    model.fit({owner: records for owner in cluster.data_owners}, epochs=1, verbose=0)


def wait_for(name: str) -> None:
    while not Path(f"/tmp/{name}").exists():
        time.sleep(0.1)


averaged_rounds()  # traced: the seeds recorded are these rounds'
secure_random.secure_seed = make_seed  # the training round's own seeds are made as in training, fresh each round
trained_round()
print("READY", flush=True)
wait_for("capture-go")
for _ in range(CAPTURED_ROUNDS):
    averaged_rounds()
    trained_round()
print("DONE", flush=True)
wait_for("capture-stopped")
devices = {owner.device_name: owner.name for owner in cluster.data_owners}
print("SEEDS " + json.dumps([{"owner": devices[seed.device], "bytes": seed.numpy().tobytes().hex()} for seed in seeds]))
