"""Fixed-point encoding of float updates into the ring Z/2^64 (TF int64 wraps modulo 2^64)."""

from __future__ import annotations

import tensorflow as tf

RING_BITS = 64


def capacity(fractional_bits: int, inputs: int) -> float:
    """Largest |value| such that the sum of `inputs` encodings stays inside the signed ring."""
    return 2.0 ** (RING_BITS - 1 - fractional_bits) / inputs


def encode(values: tf.Tensor, fractional_bits: int) -> tf.Tensor:
    scaled = tf.round(tf.cast(values, tf.float64) * 2.0**fractional_bits)
    return tf.cast(scaled, tf.int64)


def decode_mean(total: tf.Tensor, fractional_bits: int, inputs: int) -> tf.Tensor:
    return tf.cast(tf.cast(total, tf.float64) / (2.0**fractional_bits * inputs), tf.float32)
