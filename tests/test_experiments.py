"""Experiments of one's own on a real cluster: pipeline functions of any shape, weighted FedAvg, FedProx."""

import csv
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_remote_cluster import TOLERANCE, owner_updates

import fl
from fl.aggregation.registry import make_aggregation
from fl.data import datasets
from fl.data.split import split_among_players
from fl.rounds import CompiledAverage


@pytest.mark.parametrize("protocol", ["additive", "pond"])
def test_the_weighted_average_divides_by_the_total_weight_summed_in_the_secure_sum(cluster, protocol):
    updates = owner_updates(cluster, size=500)
    owners = cluster.data_owners
    given = dict(zip(owners, [0.125, 0.5, 0.0]))  # the last owner trained on no example this round
    weights = {}
    for owner in owners:
        with tf.device(owner.device_name):
            weights[owner] = tf.identity(tf.constant(given[owner]))
    compiled = CompiledAverage(make_aggregation(protocol, cluster), owners, 500)
    report = compiled(updates, weights)
    expected = sum(given[o] * updates[o].numpy() for o in owners) / sum(given.values())
    assert report.accepted and report.total_weight == pytest.approx(0.625, abs=1e-4)
    np.testing.assert_allclose(compiled.mean.numpy(), expected, atol=20 * TOLERANCE[protocol])


def test_a_round_whose_total_weight_is_zero_is_refused(cluster):
    owners = cluster.data_owners
    weights = {}
    for owner in owners:
        with tf.device(owner.device_name):
            weights[owner] = tf.identity(tf.zeros([]))
    compiled = CompiledAverage(make_aggregation("additive", cluster), owners, 100)
    report = compiled(owner_updates(cluster, size=100), weights)
    assert not report.accepted
    assert compiled.refusal(report) == "the owners' total weight is zero (no owner trained on any example this round)"


def write_owner_csvs(cluster) -> None:
    """Each owner's own file in its own directory (the local backend's players share this disk)."""
    digits = datasets.load("digits")
    parts = split_among_players(digits.x_train, digits.y_train, len(cluster.data_owners), seed=3)
    for owner, (x, y) in [*zip(cluster.data_owners, parts), (cluster.model_owner, (digits.x_test, digits.y_test))]:
        with (Path(owner.data_dir) / "digits.csv").open("w", newline="") as stream:
            writer = csv.writer(stream)
            for pixels, label in zip(x.reshape(len(x), -1), y):
                writer.writerow([*(f"{v:.4f}" for v in pixels), int(label), 1.0 if label % 2 else 0.5])


def named_inputs(owner, seed):
    """A dict of two inputs for a functional model, and a sample weight per example, parsed on `owner`."""
    columns = [[0.0]] * 64 + [[0], [0.0]]

    def parse(line):
        fields = tf.io.decode_csv(line, columns)
        pixels = tf.reshape(tf.stack(fields[:64]), [8, 8, 1])
        return {"pixels": pixels, "row_sums": tf.reduce_sum(pixels, axis=[1, 2])}, fields[64], fields[65]

    return fl.shuffled(tf.data.TextLineDataset(f"{owner.data_dir}/digits.csv").map(parse), seed).batch(32)


def test_a_functional_model_with_named_inputs_and_sample_weights_trains_on_pipeline_functions(cluster):
    write_owner_csvs(cluster)
    tf.keras.utils.set_random_seed(11)
    federated = fl.FederatedLearning(cluster.model_owner, make_aggregation("additive", cluster))
    with federated:
        pixels = tf.keras.Input((8, 8, 1), name="pixels")
        row_sums = tf.keras.Input((8,), name="row_sums")
        hidden = tf.keras.layers.Dense(32, activation="relu")(
            tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(pixels), row_sums])
        )
        model = tf.keras.Model({"pixels": pixels, "row_sums": row_sums}, tf.keras.layers.Dense(10, activation="softmax")(hidden))
        model.compile(optimizer=tf.keras.optimizers.SGD(0.3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit({owner: named_inputs for owner in cluster.data_owners}, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    _, accuracy = model.evaluate(named_inputs, verbose=0)  # a pipeline function on the model owner
    assert accuracy > 0.8


def one_round_step(cluster, proximal_mu: float) -> float:
    """How far one FedAvg round of 5 local epochs moves the weights."""
    train, _ = fl.owner_sources(cluster)
    tf.keras.utils.set_random_seed(7)
    local = fl.LocalTraining(local_epochs=5, proximal_mu=proximal_mu)
    with fl.FederatedLearning(cluster.model_owner, make_aggregation("plaintext", cluster), local=local):
        model = tf.keras.Sequential(
            [tf.keras.layers.Flatten(input_shape=(8, 8, 1)), tf.keras.layers.Dense(10, activation="softmax")]
        )
        model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    before = [w.numpy() for w in model.weights]
    model.fit(train, epochs=1, verbose=0)
    return float(np.sqrt(sum(np.sum((w.numpy() - b) ** 2) for w, b in zip(model.weights, before))))


def test_fedprox_keeps_each_owner_near_the_global_model(cluster):
    plain, proximal = one_round_step(cluster, 0.0), one_round_step(cluster, 2.0)
    assert proximal < 0.6 * plain, (plain, proximal)
