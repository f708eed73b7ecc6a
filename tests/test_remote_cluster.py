"""Against a real cluster: one TF server process per player, this process as the driver."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import fl
from fl import secure_random
from fl.aggregation import fixedpoint
from fl.data.sources import OwnerData
from fl.errors import LocalityError, RangeError, RoundFailedError, UpdateMismatchError
from fl.train import build_classifier, make_aggregation

# pond and aby3: 16 fractional bits, cut toward zero once on the owner (tfe's encoding, off by
# less than 2^-16), then summed exactly and divided in the clear
TOLERANCE = {"additive": 1e-6, "pond": 2e-5, "aby3": 2e-5}


def owner_updates(cluster, size: int = 2000, scale: float = 5.0) -> dict:
    updates = {}
    for i, owner in enumerate(cluster.data_owners):
        with tf.device(owner.device_name):
            updates[owner] = tf.random.stateless_uniform([size], seed=[i, 42], minval=-scale, maxval=scale)
    return updates


def test_seed_made_on_a_data_owner_is_made_on_its_device(cluster):
    owner = cluster.data_owners[1]
    with tf.device(owner.device_name):
        seed = secure_random.secure_seed()
        mask = secure_random.seeded_full_range([16], seed)
    assert seed.device == owner.device_name
    assert mask.device == owner.device_name


@pytest.mark.parametrize("protocol", ["additive", "pond", "aby3"])
def test_secure_average_equals_plaintext_average(cluster, protocol):
    updates = owner_updates(cluster)
    plaintext = make_aggregation("plaintext", cluster)
    expected = plaintext.aggregate(updates).numpy()
    np.testing.assert_allclose(expected, np.mean([u.numpy() for u in updates.values()], axis=0), atol=1e-6)
    aggregation = make_aggregation(protocol, cluster)
    average = aggregation.aggregate(aggregation.bound(updates).updates)
    assert average.device == cluster.model_owner.device_name
    np.testing.assert_allclose(average.numpy(), expected, atol=TOLERANCE[protocol])


@pytest.mark.parametrize(("protocol", "seeds", "vectors"), [("pond", 1, 1), ("aby3", 4, 2)])
def test_tfe_protocol_owners_send_seeds_and_64_bit_shares(cluster, protocol, seeds, vectors):
    aggregation = make_aggregation(protocol, cluster)
    expected = aggregation.expected_bytes(cluster.data_owners, 1000)
    assert expected == {owner.name: seeds * 32 + vectors * 8 * 1000 for owner in cluster.data_owners}


def test_additive_shares_are_seeds_expanded_on_their_holders_and_look_random(cluster):
    aggregation = make_aggregation("additive", cluster)
    owner = cluster.data_owners[0]
    update = owner_updates(cluster, size=4000)[owner]
    shares = aggregation.share(owner, update)
    assert {player.name for player in shares} == {p.name for p in cluster.data_owners}
    with tf.device(owner.device_name):
        encoded = fixedpoint.encode(update, aggregation.fractional_bits).numpy()
    for holder, share in shares.items():
        assert share.device == holder.device_name
        if holder != owner:
            values = share.numpy()
            assert not np.array_equal(values, encoded)
            assert 0.45 < np.mean(values < 0) < 0.55  # top bit of a uniform ring element is a fair coin
    total = np.sum([s.numpy() for s in shares.values()], axis=0)  # wraps modulo 2^64 like the ring
    np.testing.assert_array_equal(total, encoded)


def test_out_of_range_values_are_clipped_and_counted_or_refused(cluster):
    updates = owner_updates(cluster, size=100, scale=1.0)
    owner = cluster.data_owners[2]
    with tf.device(owner.device_name):
        updates[owner] = tf.concat([updates[owner][:-2], [50.0, -70.0]], axis=0)
    clip = make_aggregation("additive", cluster, value_range=10.0, max_clipped_fraction=0.02)
    bounded = clip.bound(updates)
    assert bounded.clipped == {"data-owner-0": 0, "data-owner-1": 0, "data-owner-2": 2}
    np.testing.assert_allclose(bounded.updates[owner].numpy()[-2:], [10.0, -10.0])
    refuse = make_aggregation("additive", cluster, value_range=10.0, out_of_range="refuse")
    with pytest.raises(RangeError, match="data-owner-2 has 2 values outside ±10"):
        refuse.bound(updates)
    ruined = make_aggregation("additive", cluster, value_range=10.0, max_clipped_fraction=0.01)
    with pytest.raises(RangeError, match=r"data-owner-2 has 2 of 100 values \(2.0%\) outside ±10, more than max_clipped"):
        ruined.bound(updates)


def test_training_metrics_riding_with_the_update_are_not_clipped_with_it(cluster):
    """A diverging loss must show as it is: the last values (loss, accuracy) are bounded by the encoding only."""
    updates = owner_updates(cluster, size=100, scale=1.0)
    owner = cluster.data_owners[0]
    with tf.device(owner.device_name):
        updates[owner] = tf.concat([updates[owner][:-2], [5000.0, 0.5]], axis=0)
    aggregation = make_aggregation("additive", cluster, value_range=10.0)
    bounded = aggregation.bound(updates, metric_count=2)
    assert bounded.clipped[owner.name] == 0
    np.testing.assert_allclose(bounded.updates[owner].numpy()[-2:], [5000.0, 0.5])
    mean = aggregation.aggregate(bounded.updates).numpy()
    expected = np.mean([bounded.updates[o].numpy() for o in cluster.data_owners], axis=0)
    np.testing.assert_allclose(mean[-2:], expected[-2:], rtol=1e-6)


def test_updates_of_different_sizes_are_refused(cluster):
    updates = owner_updates(cluster, size=10)
    owner = cluster.data_owners[1]
    with tf.device(owner.device_name):
        updates[owner] = tf.zeros([12])
    with pytest.raises(UpdateMismatchError, match=r"different sizes .*data-owner-1=12"):
        make_aggregation("pond", cluster).bound(updates)


def test_range_beyond_the_encoding_capacity_is_refused(cluster):
    aggregation = make_aggregation("aby3", cluster, value_range=1e6)
    with pytest.raises(RangeError, match="exceeds the encoding's capacity"):
        aggregation.bound(owner_updates(cluster, size=10))


def federated_model(cluster, aggregation: str = "additive", **kwargs):
    federated = fl.FederatedLearning(cluster.model_owner, make_aggregation(aggregation, cluster), **kwargs)
    with federated:
        model = build_classifier(64, 10, hidden_units=32, learning_rate=0.3)
    return federated, model


def test_short_training_run_on_digits_learns(cluster):
    train_data, test_data = fl.owner_sources(cluster)
    federated, model = federated_model(cluster)
    assert all(w.device == cluster.model_owner.device_name for w in model.weights)
    history = model.fit(train_data, epochs=4, verbose=0, validation_data=test_data)
    assert isinstance(history, tf.keras.callbacks.History)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert len(federated.round_results) == 4
    _, accuracy = model.evaluate(test_data, verbose=0)
    assert accuracy > 0.8
    assert history.history["val_accuracy"][-1] == pytest.approx(accuracy)


def test_a_ruinous_learning_rate_fails_the_round_instead_of_clipping_the_model_silently(cluster):
    """The issue's `--learning-rate 1e6`: most of each update is clipped, so the round is refused, weights unchanged."""
    train_data, _ = fl.owner_sources(cluster)
    federated = fl.FederatedLearning(cluster.model_owner, make_aggregation("additive", cluster))
    with federated:
        model = build_classifier(64, 10, hidden_units=32, learning_rate=1e6)
    before = [w.numpy() for w in model.weights]
    with pytest.raises(RoundFailedError, match=r"round 0 refused: update from data-owner-\d has \d+ of 2410 values"):
        model.fit(train_data, epochs=1, verbose=0)
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(model.weights, before))


def test_training_data_is_read_on_its_owner(cluster):
    """Relative paths resolve in each owner's own working directory, which the driver cannot see."""
    assert not Path("train.tfrecord").exists()
    sources = {owner: OwnerData(owner, "train.tfrecord", 64) for owner in cluster.data_owners}
    _, model = federated_model(cluster, aggregation="plaintext")
    history = model.fit(sources, epochs=1, verbose=0)
    assert history.history["loss"][0] > 0


def test_model_built_outside_the_context_is_refused(cluster):
    outside = tf.keras.Sequential([tf.keras.layers.Dense(10, input_shape=(64,))])
    federated = fl.FederatedLearning(cluster.model_owner, make_aggregation("plaintext", cluster))
    with pytest.raises(LocalityError, match="not on the model owner model-owner"), federated:
        outside.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(LocalityError, match="give its first layer an input shape"), federated:
        tf.keras.Sequential([tf.keras.layers.Dense(10)]).compile(optimizer="sgd", loss="mse")


def test_evaluate_refuses_data_that_is_not_on_the_model_owner(cluster):
    train_data, _ = fl.owner_sources(cluster)
    _, model = federated_model(cluster, aggregation="plaintext")
    with pytest.raises(LocalityError, match="evaluate runs on the model owner"):
        model.evaluate(next(iter(train_data.values())))


def test_owners_with_different_model_shapes_fail_the_round_and_leave_weights_unchanged(cluster):
    from fl.local_training import OwnerTrainer, training_spec
    from fl.rounds import RoundRunner

    train_data, _ = fl.owner_sources(cluster)
    federated, model = federated_model(cluster)
    spec = training_spec(model, "sparse_categorical_crossentropy", ["accuracy"])
    with federated:
        other = build_classifier(64, 10, hidden_units=16, learning_rate=0.3)
    owners = list(train_data)
    trainers = {owner: OwnerTrainer(model, train_data[owner], spec, 32, 1, None) for owner in owners[:2]}
    trainers[owners[2]] = OwnerTrainer(other, train_data[owners[2]], spec, 32, 1, None)
    before = [w.numpy() for w in model.weights]
    runner = RoundRunner(cluster, model, federated.aggregation, trainers, spec, 1.0, seed=0)
    with pytest.raises(
        RoundFailedError,
        match=r"data-owner-2: its model does not match the model owner's weights .*Shape mismatch.*weights are unchanged",
    ):
        runner.run(0)
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_each_fit_call_trains_its_own_epochs_as_in_keras(cluster):
    train_data, _ = fl.owner_sources(cluster)
    federated, model = federated_model(cluster, aggregation="plaintext")
    model.fit(train_data, epochs=1, verbose=0)
    history = model.fit(train_data, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert [r.index for r in federated.round_results] == [0, 1, 2] and federated.completed_rounds == 3
