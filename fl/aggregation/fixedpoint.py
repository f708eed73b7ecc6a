"""Fixed-point encoding of float updates into a ring Z/2^k (TF's int32 and int64 wrap modulo 2^k).

The narrowest ring that holds the sum decides what crosses the wire: a 32-bit ring
sends 4 bytes a value, as plaintext float32 does (SecAgg works in Z/2^32 too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

# finer than float32's 24-bit mantissa needs for updates within ±1; below this a wider ring is used
MIN_FRACTIONAL_BITS = 20
WIDE_FRACTIONAL_BITS = 24
# training metrics (loss, accuracy) ride in the same ring with a coarser scale, so a loss in the thousands still fits
METRIC_FRACTIONAL_BITS = 16


@dataclass(frozen=True)
class Ring:
    bits: int
    fractional_bits: int

    @property
    def dtype(self) -> tf.DType:
        return tf.int32 if self.bits == 32 else tf.int64

    @property
    def element_bytes(self) -> int:
        return self.bits // 8

    def capacity(self, inputs: int, fractional_bits: int | None = None) -> float:
        """Largest |value| whose sum over `inputs` encodings stays strictly inside the signed ring."""
        scale = self.fractional_bits if fractional_bits is None else fractional_bits
        return 2.0 ** (self.bits - 1 - scale) / inputs

    def encode(self, values: tf.Tensor, fractional_bits: int | None = None) -> tf.Tensor:
        """float32 all the way: scaling by a power of two and rounding are exact in float32, so
        the result equals a float64 encoding at half the memory traffic."""
        scale = self.fractional_bits if fractional_bits is None else fractional_bits
        return tf.cast(tf.round(values * 2.0**scale), self.dtype)

    def decode(self, total: tf.Tensor, fractional_bits: int | None = None) -> tf.Tensor:
        """One rounding, to float32, as a float64 detour would make (the division is exact)."""
        scale = self.fractional_bits if fractional_bits is None else fractional_bits
        return tf.cast(total, tf.float32) / 2.0**scale

    def __str__(self) -> str:
        return f"Z/2^{self.bits} with {self.fractional_bits} fractional bits"


def choose_ring(value_range: float, inputs: int) -> Ring:
    """A 32-bit ring when the sum of `inputs` values in ±value_range fits with enough resolution, else 64-bit."""
    fractional_bits = math.ceil(math.log2(2.0**31 / (value_range * inputs))) - 1
    if fractional_bits >= MIN_FRACTIONAL_BITS:
        return Ring(32, min(fractional_bits, WIDE_FRACTIONAL_BITS))
    return Ring(64, WIDE_FRACTIONAL_BITS)
