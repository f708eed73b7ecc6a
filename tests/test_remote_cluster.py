"""Against a real cluster: one TF server process per player, this process as the driver."""

import functools
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import fl
from fl import secure_random
from fl.aggregation import fixedpoint
from fl.aggregation.additive import AdditiveSecureAverage
from fl.aggregation.registry import make_aggregation
from fl.data.sources import OwnerData
from fl.errors import LocalityError, RangeError, RoundFailedError, UpdateMismatchError
from fl.policies import LocalTraining, RangePolicy
from fl.rounds import CompiledAverage, Report
from fl.train import build_classifier

# pond and aby3: 16 fractional bits in Z/2^32, cut toward zero once on the owner (tfe's encoding,
# off by less than 2^-16), then summed exactly and divided in the clear
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


def average(cluster, name: str, updates: dict, metric_count: int = 0, **bounds) -> tuple[CompiledAverage, Report]:
    """One compiled average, the path a round takes."""
    size = int(updates[cluster.data_owners[0]].shape[0])
    compiled = CompiledAverage(make_aggregation(name, cluster, RangePolicy(**bounds)), cluster.data_owners, size, metric_count)
    return compiled, compiled(updates)


@pytest.mark.parametrize("protocol", ["additive", "pond", "aby3"])
def test_secure_average_equals_plaintext_average(cluster, protocol):
    updates = owner_updates(cluster)
    plaintext, report = average(cluster, "plaintext", updates)
    expected = plaintext.mean.numpy()
    assert report.accepted
    np.testing.assert_allclose(expected, np.mean([u.numpy() for u in updates.values()], axis=0), atol=1e-6)
    secure, report = average(cluster, protocol, updates)
    assert report.accepted and secure.mean.device == cluster.model_owner.device_name
    np.testing.assert_allclose(secure.mean.numpy(), expected, atol=TOLERANCE[protocol])
    assert report.stage_ends["sharing"] <= report.stage_ends["aggregation"] <= report.stage_ends["reveal"]


def bytes_leaving_each_owner(graph: tf.Graph, owners) -> dict[str, int]:
    """What the placement sends: each tensor made on an owner's task and used on another task, once per task using it."""

    def task(device: str) -> tuple:
        spec = tf.DeviceSpec.from_string(device)
        return spec.job, spec.task

    owner_of = {task(owner.device_name): owner.name for owner in owners}
    crossing = set()
    for operation in graph.get_operations():
        for tensor in operation.inputs:
            made_on = task(tensor.op.device)
            if made_on in owner_of and task(operation.device) != made_on:
                crossing.add((tensor.name, task(operation.device)))
    sent = dict.fromkeys(owner_of.values(), 0)
    for name, _ in crossing:
        tensor = graph.get_tensor_by_name(name)
        sent[owner_of[task(tensor.op.device)]] += tensor.shape.num_elements() * tensor.dtype.size
    return sent


@pytest.mark.parametrize(("protocol", "seeds", "vectors"), [("pond", 1, 1), ("aby3", 4, 2)])
def test_tfe_protocol_owners_send_seeds_and_32_bit_shares(cluster, protocol, seeds, vectors):
    aggregation = make_aggregation(protocol, cluster)

    @tf.function
    def shares():
        return aggregation.held_tensors(aggregation.share(owner_updates(cluster, size=1000), metric_count=0))

    graph = shares.get_concrete_function().graph
    expected = aggregation.expected_bytes(cluster.data_owners, 1000)
    assert bytes_leaving_each_owner(graph, cluster.data_owners) == expected
    assert expected == {owner.name: seeds * 32 + vectors * 4 * 1000 for owner in cluster.data_owners}
    assert {share.dtype for share in shares()} == {tf.int32}


def test_additive_shares_are_seeds_expanded_on_their_holders_and_look_random(cluster):
    aggregation = make_aggregation("additive", cluster)
    owners = cluster.data_owners
    assert aggregation.ring == fixedpoint.Ring(32, 24)  # ±32 over 3 owners: 4 bytes a value, as plaintext
    # one seed per pair of owners, made by the first of the pair; each owner's partial sum to the receiver: 4 bytes a value
    expected = aggregation.expected_bytes(owners, 1000)
    assert expected == {"data-owner-0": 2 * 32 + 4000, "data-owner-1": 32 + 4000, "data-owner-2": 4000}
    update = owner_updates(cluster, size=4000)[owners[0]]
    held = aggregation.share_update(owners[0], update, owners)
    # it keeps its update and the seeds of its two masks; each other owner holds one seed
    assert {player.name: tuple(map(len, h)) for player, h in held.items()} == {
        "data-owner-0": (1, 0, 2),
        "data-owner-1": (0, 1, 0),
        "data-owner-2": (0, 1, 0),
    }
    with tf.device(owners[0].device_name):
        encoded = aggregation.ring.encode(update).numpy()
    shares = {}
    for holder, (vectors, added, subtracted) in held.items():
        assert {tensor.device for tensor in [*vectors, *added, *subtracted]} == {holder.device_name}
        with tf.device(holder.device_name):
            shares[holder] = secure_random.mask(tf.add_n(vectors or [tf.zeros([4000], tf.int32)]), added, subtracted).numpy()
    for holder, share in shares.items():
        assert not np.array_equal(share, encoded)
        assert 0.45 < np.mean(share < 0) < 0.55, holder.name  # top bit of a uniform ring element is a fair coin
    total = np.sum(list(shares.values()), axis=0, dtype=np.int32)  # wraps modulo 2^32 like the ring
    np.testing.assert_array_equal(total, encoded)


def test_what_each_additive_owner_sends_the_receiver_looks_random_and_only_the_sum_is_revealed(cluster):
    """The pairwise masks: the last owner makes no mask of its own, the two before it masked theirs for it."""
    aggregation = make_aggregation("additive", cluster)
    updates = owner_updates(cluster, size=4000)
    summed = aggregation.sum(aggregation.share(updates, metric_count=0))
    encoded = {}
    for owner, update in updates.items():
        with tf.device(owner.device_name):
            encoded[owner] = aggregation.ring.encode(update).numpy()
    for owner, partial_sum in summed.items():
        values = partial_sum.numpy()
        assert not np.array_equal(values, encoded[owner]) and 0.45 < np.mean(values < 0) < 0.55, owner.name
    total = np.sum([s.numpy() for s in summed.values()], axis=0, dtype=np.int32)
    np.testing.assert_array_equal(total, np.sum(list(encoded.values()), axis=0, dtype=np.int32))


def test_additive_with_a_compute_server_masks_every_owners_update_for_every_holder(cluster):
    """A compute player that is not an owner makes no masks, so the pairwise shortcut would leave an owner bare."""
    owners = cluster.data_owners
    aggregation = AdditiveSecureAverage([cluster.player("server0"), owners[0]], cluster.model_owner)
    expected = aggregation.expected_bytes(owners, 1000)
    vector = aggregation.ring.element_bytes * 1000
    assert expected == {"server0": vector, "data-owner-0": 32 + vector, "data-owner-1": 32 + vector, "data-owner-2": 32 + vector}
    updates = owner_updates(cluster, size=4000)
    compiled = CompiledAverage(aggregation, owners, 4000)
    report = compiled(updates)
    assert report.accepted
    np.testing.assert_allclose(compiled.mean.numpy(), np.mean([u.numpy() for u in updates.values()], axis=0), atol=1e-6)


def test_a_wide_range_falls_back_to_a_64_bit_ring_and_still_averages(cluster):
    updates = owner_updates(cluster, scale=500.0)
    compiled, report = average(cluster, "additive", updates, value_range=1000.0)
    assert compiled.aggregation.ring == fixedpoint.Ring(64, 24) and report.accepted
    expected = np.mean([u.numpy() for u in updates.values()], axis=0)
    np.testing.assert_allclose(compiled.mean.numpy(), expected, atol=1e-4)


def test_out_of_range_values_are_clipped_and_counted_or_refused(cluster):
    updates = owner_updates(cluster, size=100, scale=1.0)
    owner = cluster.data_owners[2]
    with tf.device(owner.device_name):
        updates[owner] = tf.concat([updates[owner][:-2], [50.0, -70.0]], axis=0)
    clip, report = average(cluster, "additive", updates, value_range=10.0, max_clipped_fraction=0.02)
    assert report.accepted and clip.refusal(report) is None
    assert report.clipped == {"data-owner-0": 0, "data-owner-1": 0, "data-owner-2": 2}
    clipped = np.concatenate([updates[owner].numpy()[:-2], [10.0, -10.0]])
    expected = np.mean([*(updates[o].numpy() for o in cluster.data_owners[:2]), clipped], axis=0)
    np.testing.assert_allclose(clip.mean.numpy(), expected, atol=1e-6)
    refuse, report = average(cluster, "additive", updates, value_range=10.0, out_of_range="refuse")
    assert not report.accepted
    assert re.match("update from data-owner-2 has 2 values outside ±10", refuse.refusal(report))
    ruined, report = average(cluster, "additive", updates, value_range=10.0, max_clipped_fraction=0.01)
    assert not report.accepted
    assert re.match(r"update from data-owner-2 has 2 of 100 values \(2.0%\) outside ±10, more than", ruined.refusal(report))


def test_non_finite_values_refuse_the_average(cluster):
    updates = owner_updates(cluster, size=100, scale=1.0)
    owner = cluster.data_owners[1]
    with tf.device(owner.device_name):
        updates[owner] = tf.concat([updates[owner][:-1], [np.nan]], axis=0)
    compiled, report = average(cluster, "pond", updates)
    assert not report.accepted and report.finite == {"data-owner-0": True, "data-owner-1": False, "data-owner-2": True}
    assert compiled.refusal(report) == "update from data-owner-1 has NaN or infinite values; lower the learning rate"


def test_training_metrics_riding_with_the_update_are_not_clipped_with_it(cluster):
    """A diverging loss must show as it is: the last values (loss, accuracy) are bounded by the encoding only."""
    updates = owner_updates(cluster, size=100, scale=1.0)
    owner = cluster.data_owners[0]
    with tf.device(owner.device_name):
        updates[owner] = tf.concat([updates[owner][:-2], [5000.0, 0.5]], axis=0)
    compiled, report = average(cluster, "additive", updates, metric_count=2, value_range=10.0)
    assert report.clipped[owner.name] == 0 and report.accepted
    expected = np.mean([updates[o].numpy() for o in cluster.data_owners], axis=0)
    np.testing.assert_allclose(compiled.mean.numpy()[-2:], expected[-2:], atol=2.0**-16)


def test_updates_of_different_sizes_are_refused(cluster):
    updates = owner_updates(cluster, size=10)
    owner = cluster.data_owners[1]
    with tf.device(owner.device_name):
        updates[owner] = tf.zeros([12])
    with pytest.raises(UpdateMismatchError, match=r"different sizes .*data-owner-1=12"):
        make_aggregation("pond", cluster).average(updates)


def test_range_beyond_the_encoding_capacity_is_refused(cluster):
    aggregation = make_aggregation("aby3", cluster, RangePolicy(value_range=1e6))
    with pytest.raises(RangeError, match="exceeds the encoding's capacity"):
        aggregation.average(owner_updates(cluster, size=10))


def federated_model(cluster, aggregation: str = "additive", **kwargs):
    federated = fl.FederatedLearning(cluster.model_owner, make_aggregation(aggregation, cluster), **kwargs)
    with federated:
        model = build_classifier((8, 8, 1), 10, hidden_units=32, learning_rate=0.3)
    return federated, model


def test_short_training_run_on_digits_learns(cluster):
    train_data, test_data = fl.owner_sources(cluster)
    federated, model = federated_model(cluster)
    assert all(w.device == cluster.model_owner.device_name for w in model.weights)
    history = model.fit(train_data, epochs=4, verbose=0, validation_data=test_data)
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
        model = build_classifier((8, 8, 1), 10, hidden_units=32, learning_rate=1e6)
    before = [w.numpy() for w in model.weights]
    with pytest.raises(RoundFailedError, match=r"round 0 refused: update from data-owner-\d has \d+ of 2410 values"):
        model.fit(train_data, epochs=1, verbose=0)
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(model.weights, before))


def test_training_data_is_read_on_its_owner(cluster):
    """Relative paths resolve in each owner's own working directory, which the driver cannot see."""
    assert not Path("train.tfrecord").exists()
    sources = {owner: OwnerData(owner, "train.tfrecord", (8, 8, 1)) for owner in cluster.data_owners}
    _, model = federated_model(cluster, aggregation="plaintext")
    history = model.fit(sources, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


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
        other = build_classifier((8, 8, 1), 10, hidden_units=16, learning_rate=0.3)
    owners = list(train_data)
    local = LocalTraining()
    trainers = {owner: functools.partial(OwnerTrainer, model, train_data[owner], spec, local) for owner in owners[:2]}
    trainers[owners[2]] = functools.partial(OwnerTrainer, other, train_data[owners[2]], spec, local)
    before = [w.numpy() for w in model.weights]
    runner = RoundRunner(cluster, model, federated.aggregation, trainers, spec, federated.server_update(model), seed=0)
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
