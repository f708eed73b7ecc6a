"""Distributed DP, from the outside: the noise the revealed sums carry, what the model owner receives, the accountant."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from dp_accounting import GaussianDpEvent, SelfComposedDpEvent
from dp_accounting.rdp import RdpAccountant

import fl
from fl import secure_random
from fl.aggregation.additive import AdditiveSecureAverage
from fl.aggregation.registry import make_aggregation
from fl.errors import FLError, InsecureRandomnessError, RangeError
from fl.policies import DifferentialPrivacy
from fl.privacy.accountant import ORDERS, PrivacyAccountant
from fl.privacy.gaussian import GaussianMechanism
from fl.privacy.skellam import SkellamMechanism
from fl.rounds import CompiledAverage, RoundResult
from fl.settings import TrainSettings
from fl.train import train

SIZE = 1000
ROUNDS = 20
# a coarse lattice keeps every revealed total below 2^24, where a float32 shows whether it is an integer
LATTICE_BITS = 8
# each statistic below is compared at 5 standard errors: a false alarm about once in 1.7 million runs
Z = 5.0


def lattice_updates(cluster) -> tuple[dict, np.ndarray]:
    """Fixed updates already on the lattice and inside the clip: clipping and rounding leave them as they are."""
    rng = np.random.default_rng(7)
    updates, total = {}, np.zeros(SIZE)
    for owner in cluster.data_owners:
        steps = rng.integers(-3, 4, SIZE)
        total += steps
        with tf.device(owner.device_name):
            updates[owner] = tf.identity(tf.constant(steps * 2.0**-LATTICE_BITS, tf.float32))
    return updates, total


def mechanism(owners: int, noise_multiplier: float = 1.0) -> SkellamMechanism:
    return SkellamMechanism(DifferentialPrivacy(noise_multiplier), SIZE, owners, LATTICE_BITS)


@pytest.mark.parametrize("protocol", ["additive", "pond", "aby3"])
def test_the_revealed_sums_carry_integer_noise_of_the_configured_variance(cluster, protocol):
    owners = cluster.data_owners
    updates, total = lattice_updates(cluster)
    privacy = mechanism(len(owners))
    compiled = CompiledAverage(make_aggregation(protocol, cluster), owners, SIZE, privacy=privacy)
    errors = []
    for _ in range(ROUNDS):
        report = compiled(updates)
        assert report.accepted and not any(report.norm_clipped.values())
        revealed = compiled.mean.numpy().astype(np.float64) * len(owners) * 2.0**LATTICE_BITS
        errors.append(revealed - total)
    errors = np.concatenate(errors)
    np.testing.assert_allclose(errors, np.round(errors), atol=1e-2)  # integers on the lattice, before decoding
    variance = 2 * privacy.total_mean  # the quorum is every owner: the sum carries exactly the configured noise
    assert variance == pytest.approx(privacy.l2_sensitivity**2)
    samples = errors.size
    assert abs(errors.mean()) < Z * math.sqrt(variance / samples)
    # the sample variance's standard error: sqrt((2 + excess kurtosis) / n), Skellam's excess kurtosis is 1/variance
    assert abs(errors.var() / variance - 1) < Z * math.sqrt((2 + 1 / variance) / samples)


def test_central_dp_adds_gaussian_noise_of_the_configured_deviation_once_to_the_revealed_sum(cluster):
    owners = cluster.data_owners
    updates, total = lattice_updates(cluster)  # norms near 0.06, inside the clip of 1
    privacy = GaussianMechanism(DifferentialPrivacy(2.0, central=True), SIZE, len(owners))
    compiled = CompiledAverage(make_aggregation("plaintext", cluster), owners, SIZE, privacy=privacy)
    errors = []
    for _ in range(ROUNDS):
        report = compiled(updates)
        assert report.accepted and not any(report.norm_clipped.values())
        errors.append(compiled.mean.numpy().astype(np.float64) * len(owners) - total * 2.0**-LATTICE_BITS)
    errors = np.concatenate(errors) / 2.0  # in units of the configured deviation, noise_multiplier x clip_norm
    samples = errors.size
    assert abs(errors.mean()) < Z / math.sqrt(samples)
    assert abs(errors.var() - 1) < Z * math.sqrt(2 / samples)
    excess_kurtosis = np.mean(errors**4) / errors.var() ** 2 - 3  # a Gaussian's is 0, its standard error sqrt(24 / n)
    assert abs(excess_kurtosis) < Z * math.sqrt(24 / samples)


class RecordingAdditive(AdditiveSecureAverage):
    """Keeps, on the output receiver, every vector the receiver is sent (the compute players' partial sums)."""

    def __init__(self, compute_players, output_receiver) -> None:
        super().__init__(compute_players, output_receiver)
        with tf.device(output_receiver.device_name):  # the vector and the weight's slot
            self.received = [tf.Variable(tf.zeros([SIZE + 1], self.ring.dtype), trainable=False) for _ in compute_players]

    def reveal(self, summed, metric_count):
        with tf.device(self.output_receiver.device_name):
            kept = [variable.assign(vector) for variable, vector in zip(self.received, summed.values())]
            with tf.control_dependencies(kept):
                return super().reveal(summed, metric_count)


def test_the_model_owner_receives_noised_partial_sums_only(cluster):
    owners = cluster.data_owners
    updates, total = lattice_updates(cluster)
    aggregation = RecordingAdditive(owners, cluster.model_owner)
    compiled = CompiledAverage(aggregation, owners, SIZE, privacy=mechanism(len(owners)))
    assert compiled(updates).accepted
    ring = aggregation.ring
    received = [variable.numpy()[:SIZE].astype(np.int64) for variable in aggregation.received]
    assert len(received) == len(owners)
    modulus = 2**ring.bits
    unnoised = (total.astype(np.int64) * 2 ** (ring.fractional_bits - LATTICE_BITS)) % modulus
    revealed = sum(received) % modulus
    # what reaches the receiver adds up to a sum that differs from the un-noised one almost everywhere ...
    assert np.mean(revealed == unnoised) < 0.01
    # ... by whole lattice steps, and no single vector it receives is an owner's update in the clear
    assert np.all(((revealed - unnoised) % modulus) % 2 ** (ring.fractional_bits - LATTICE_BITS) == 0)
    for vector in received:
        assert np.mean(vector == unnoised) < 0.01


def test_in_the_gaussian_limit_the_accountant_gives_dp_accountings_gaussian_epsilon():
    """Skellam with a large mean is the Gaussian mechanism: its epsilon must meet the library's, from above."""
    privacy = SkellamMechanism(DifferentialPrivacy(1.1, delta=1e-5), 4810, 5, 20)
    accountant = PrivacyAccountant(privacy)
    for index in range(100):
        accountant.round_completed(RoundResult(index, {}, 0.0, participants=[f"owner-{i}" for i in range(5)]))
    library = RdpAccountant()
    library.compose(SelfComposedDpEvent(GaussianDpEvent(1.1), 100))
    expected = library.get_epsilon(1e-5)
    assert expected <= accountant.epsilon <= expected * 1.001


def test_central_dp_spends_exactly_dp_accountings_gaussian_epsilon():
    accountant = PrivacyAccountant(GaussianMechanism(DifferentialPrivacy(1.1, central=True), 4810, 5))
    for index in range(100):
        accountant.round_completed(RoundResult(index, {}, 0.0, participants=["a", "b", "c"]))
    library = RdpAccountant(ORDERS)
    library.compose(SelfComposedDpEvent(GaussianDpEvent(1.1), 100))
    assert accountant.epsilon == pytest.approx(library.get_epsilon(1e-5), rel=1e-12)


def test_a_round_with_owners_left_out_spends_more_and_a_resumed_run_counts_its_earlier_rounds():
    privacy = SkellamMechanism(DifferentialPrivacy(1.0), 4810, 3, 20)  # 5 owners, the noise sized for a quorum of 3
    full, quorum, resumed = PrivacyAccountant(privacy), PrivacyAccountant(privacy), PrivacyAccountant(privacy)
    full.round_completed(RoundResult(0, {}, 0.0, participants=["a", "b", "c", "d", "e"]))
    quorum.round_completed(RoundResult(0, {}, 0.0, participants=["a", "b", "c"]))
    resumed.restore(1)
    assert full.epsilon < quorum.epsilon == resumed.epsilon


def test_a_target_epsilon_stops_before_the_round_that_would_exceed_it():
    privacy = SkellamMechanism(DifferentialPrivacy(1.0, target_epsilon=6.0), 4810, 3, 20)
    accountant = PrivacyAccountant(privacy)
    rounds = 0
    while accountant.check_budget() is None:
        accountant.round_completed(RoundResult(rounds, {}, 0.0, participants=["a", "b", "c"]))
        rounds += 1
    assert accountant.epsilon <= 6.0 < accountant.epsilon_after(1)
    assert accountant.check_budget().startswith(f"stopped before round {rounds}: it would bring epsilon to ")


def test_a_target_that_no_round_can_meet_is_refused_in_one_line():
    accountant = PrivacyAccountant(SkellamMechanism(DifferentialPrivacy(1.0, target_epsilon=0.5), 4810, 3, 20))
    with pytest.raises(FLError, match=r"^--dp-target-epsilon 0.5: one round already brings epsilon to 4\.\d+ at delta 1e-05"):
        accountant.check_first_round()


def test_noise_that_the_ring_cannot_hold_is_refused_before_anything_runs():
    with pytest.raises(
        RangeError,
        match=r"^distributed DP: the sum of 3 updates clipped to 10 with noise multiplier 1 .*"
        r"raise --value-range \(a wider ring\) or lower --dp-clip-norm$",
    ):
        SkellamMechanism.calibrate(DifferentialPrivacy(1.0, clip_norm=10.0), 4810, 3, 3, 24, capacity=2.0)


def test_fl_train_under_dp_states_epsilon_by_round_stops_at_the_target_and_resumes_the_accounting(cluster_state, tmp_path):
    config = str(cluster_state.cluster_file)
    settings = dict(epochs=20, verbose=0, dp_noise_multiplier=1.0, dp_target_epsilon=8.0)
    first = train(config, TrainSettings(**settings), json_path=str(tmp_path / "dp.json"))
    reference = PrivacyAccountant(SkellamMechanism.calibrate(DifferentialPrivacy(1.0), 4810, 3, 3, 23, capacity=2**8 / 3))
    written = json.loads((tmp_path / "dp.json").read_text())
    rounds = len(written["epsilon_by_round"])
    assert 1 < rounds < 20 and written["status"] == "completed" and written["delta"] == 1e-5
    assert written["epsilon"] == pytest.approx(reference.epsilon_after(rounds)) and written["epsilon"] <= 8.0
    assert "loss" not in written["history"] and len(written["history"]["epsilon"]) == rounds  # no un-noised metric
    assert first["test_accuracy"] > 0
    exported = Path(fl.connect(config).metrics.driver_textfile).read_text()
    assert f'fl_privacy_epsilon{{aggregation="additive"}} {written["epsilon"]}' in exported
    resumed = train(config, TrainSettings(**{**settings, "epochs": rounds + 2, "dp_target_epsilon": 100.0, "resume": True}))
    assert resumed["epsilon"] == pytest.approx(reference.epsilon_after(rounds + 2))


def test_without_the_secure_random_op_dp_refuses_even_when_insecure_randomness_is_allowed(monkeypatch):
    monkeypatch.setattr(secure_random, "_ops", None)
    monkeypatch.setattr(secure_random, "_insecure_allowed", True)
    with pytest.raises(InsecureRandomnessError, match=r"^differential privacy needs the secure-random op for its noise"):
        secure_random.skellam([4], 10.0)
