"""The secure-random op: known answers against an independent ChaCha20, determinism, uniformity."""

import os

import numpy as np
import pytest
import tensorflow as tf
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from scipy import stats

from fl import secure_random
from fl.errors import InsecureRandomnessError

try:
    ops = secure_random.load()
except InsecureRandomnessError as missing:
    if os.environ.get("CI"):  # CI builds the op with `make install`: missing there is a failure
        raise
    pytest.skip(f"SECURE-RANDOM OP NOT BUILT: {missing}", allow_module_level=True)


def chacha20_keystream(seed: tf.Tensor, length: int) -> bytes:
    key = seed.numpy().astype("<i4").tobytes()
    nonce = b"\0" * 16  # cryptography's 16-byte nonce: 32-bit block counter 0, then the 96-bit IETF nonce
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(b"\0" * length)


def test_full_range_matches_independent_chacha20():
    seed = secure_random.secure_seed()
    values = secure_random.seeded_full_range([3000], seed, tf.int64).numpy()
    expected = np.frombuffer(chacha20_keystream(seed, 8 * 3000), dtype="<i8")
    np.testing.assert_array_equal(values, expected)


@pytest.mark.parametrize(("dtype", "words"), [(tf.int32, "<u4"), (tf.int64, "<u8")])
def test_mask_adds_and_subtracts_independent_chacha20_keystreams_modulo_the_ring(dtype, words):
    """Longer than one 16 KB chunk and not a whole number of them, nor of 64-byte blocks."""
    size = 9001
    values = tf.random.uniform([size], dtype.min, dtype.max, dtype=dtype)
    added, subtracted = [secure_random.secure_seed() for _ in range(2)], [secure_random.secure_seed()]
    masked = secure_random.mask(values, added, subtracted).numpy().view(words)
    expected = values.numpy().view(words).copy()
    width = np.dtype(words).itemsize
    for seed in added:
        expected += np.frombuffer(chacha20_keystream(seed, width * size), dtype=words)
    for seed in subtracted:
        expected -= np.frombuffer(chacha20_keystream(seed, width * size), dtype=words)
    np.testing.assert_array_equal(masked, expected)
    assert masked.dtype == expected.dtype and not np.array_equal(masked, values.numpy().view(words))


def test_mask_refuses_seeds_that_are_not_rows_of_eight_words():
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"added must be a \[k, 8\] int32 matrix"):
        ops.fl_secure_mask(tf.zeros([4], tf.int32), tf.zeros([8], tf.int32), tf.zeros([0, 8], tf.int32))


def test_power_of_two_range_takes_low_bits_of_keystream_words():
    seed = secure_random.secure_seed()
    values = ops.fl_secure_seeded_random_uniform([5000], seed, tf.constant(0), tf.constant(1 << 12)).numpy()
    words = np.frombuffer(chacha20_keystream(seed, 4 * 5000), dtype="<u4")
    np.testing.assert_array_equal(values, words & 0xFFF)


def test_same_seed_same_values_other_seed_other_values():
    seed, other = secure_random.secure_seed(), secure_random.secure_seed()
    assert not np.array_equal(seed.numpy(), other.numpy())
    first = secure_random.seeded_full_range([64], seed).numpy()
    np.testing.assert_array_equal(first, secure_random.seeded_full_range([64], seed).numpy())
    assert not np.array_equal(first, secure_random.seeded_full_range([64], other).numpy())


@pytest.mark.parametrize("dtype", [tf.int8, tf.int16, tf.int32, tf.int64])
def test_bounded_values_are_uniform_and_in_range(dtype):
    low, high = -3, 4  # 7 values: not a power of two, so rejection sampling is exercised
    values = ops.fl_secure_random_uniform([70_000], tf.constant(low, dtype), tf.constant(high, dtype)).numpy()
    assert values.min() == low and values.max() == high - 1
    counts = np.bincount(values - low, minlength=7)
    chi_square = (((counts - 10_000) ** 2) / 10_000).sum()
    assert chi_square < 22.5  # p = 0.001 for 6 degrees of freedom


def test_seeded_bounded_values_are_uniform():
    values = ops.fl_secure_seeded_random_uniform(
        [60_000], secure_random.secure_seed(), tf.constant(0, tf.int64), tf.constant(6, tf.int64)
    ).numpy()
    chi_square = (((np.bincount(values, minlength=6) - 10_000) ** 2) / 10_000).sum()
    assert chi_square < 20.5  # p = 0.001 for 5 degrees of freedom


def test_seed_of_wrong_size_is_refused():
    with pytest.raises(tf.errors.InvalidArgumentError, match="seed must hold 8"):
        ops.fl_secure_seeded_random_uniform([4], tf.zeros([4], tf.int32), tf.constant(0), tf.constant(5))


def test_secure_protocols_fail_closed_without_the_op(monkeypatch):
    monkeypatch.setattr(secure_random, "_ops", None)
    monkeypatch.setattr(secure_random, "_insecure_allowed", False)
    with pytest.raises(InsecureRandomnessError, match="--insecure-randomness"):
        secure_random.secure_seed()


def test_tfe_uses_our_op():
    from tf_encrypted.operations.secure_random import secure_random as tfe_secure_random

    assert tfe_secure_random.supports_seeded_randomness()
    assert tfe_secure_random.secure_seed().shape == (8,)


# chi-square goodness of fit at this p-value: a false alarm once in a million runs per mean
FALSE_ALARM = 1e-6


@pytest.mark.parametrize("mean", [0.5, 3.0, 9.9, 10.1, 60.0, 5e4])
def test_skellam_draws_follow_the_skellam_distribution_on_both_sides_of_the_sampler_switch(mean):
    """Below a mean of 10 Poisson multiplies uniforms, above it PTRS: each must give the exact distribution."""
    draws = secure_random.skellam([200_000], mean).numpy()
    values, observed = np.unique(draws, return_counts=True)
    expected = stats.skellam.pmf(values, mean, mean) * draws.size
    keep = expected >= 5  # the test's own rule; the rest pooled into the two tails
    tails = draws.size - observed[keep].sum(), draws.size - expected[keep].sum()
    _, p_value = stats.chisquare([*observed[keep], tails[0]], [*expected[keep], tails[1]])
    assert p_value > FALSE_ALARM, (mean, p_value)
    # the scale, more sharply: the sample variance's standard error is sqrt((2 + excess kurtosis 1/(2m)) / n)
    assert abs(draws.var() / (2 * mean) - 1) < 5 * np.sqrt((2 + 1 / (2 * mean)) / draws.size), draws.var()
