"""Central DP, the baseline distributed DP is measured against: noise added once, to the revealed sum.

Each owner clips its update to L2 norm `clip_norm` and shares it as it is; the model owner,
who sees the un-noised sum and is trusted with it, adds Gaussian noise of standard
deviation noise_multiplier x clip_norm per coordinate before using it. This is the
textbook mechanism (and what Flower's DP strategies do on the server). The noise comes from
the secure-random op (Box-Muller over 53-bit uniforms), like every noise of the testbed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from fl import secure_random
from fl.policies import DifferentialPrivacy
from fl.privacy import clip_to_norm

MANTISSA_BITS = 53


@dataclass(frozen=True)
class GaussianMechanism:
    settings: DifferentialPrivacy
    values: int
    quorum: int
    noised_on_owners = False

    def privatize(self, update: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        values, clipped = clip_to_norm(update, self.settings.clip_norm)
        return tf.cast(values, tf.float32), clipped, tf.constant(True)

    def noise_revealed(self, total: tf.Tensor) -> tf.Tensor:
        stddev = self.settings.noise_multiplier * self.settings.clip_norm
        return tf.cast(tf.cast(total, tf.float64) + stddev * standard_normal(tf.shape(total)), tf.float32)

    def rdp(self, orders: np.ndarray, participants: int) -> np.ndarray:
        """The Gaussian mechanism of sensitivity C and deviation zC: alpha / (2 z^2), whoever took part."""
        return orders / (2 * self.settings.noise_multiplier**2)


def standard_normal(shape: tf.Tensor) -> tf.Tensor:
    """float64 N(0, 1) per element, by Box-Muller from two secure uniforms in (0, 1] and [0, 1)."""
    scale = 2.0**-MANTISSA_BITS
    first = (tf.cast(secure_random.uniform(shape, 2**MANTISSA_BITS, tf.int64), tf.float64) + 1) * scale
    second = tf.cast(secure_random.uniform(shape, 2**MANTISSA_BITS, tf.int64), tf.float64) * scale
    return tf.sqrt(-2 * tf.math.log(first)) * tf.cos(2 * math.pi * second)
