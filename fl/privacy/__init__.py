"""Differential privacy of the revealed sums: what is done to the updates, and what the revealed sums have cost.

`skellam.py` is distributed DP: each owner noises its update in the aggregation's integer
lattice before sharing, so only a noised sum ever exists. `gaussian.py` is central DP, the
baseline it is measured against: the model owner noises the sum it was revealed.
`accountant.py` composes either mechanism's rounds into epsilon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import tensorflow as tf

if TYPE_CHECKING:
    import numpy as np

    from fl.aggregation.base import Aggregation
    from fl.policies import DifferentialPrivacy


class Mechanism(Protocol):
    """One calibration of a mechanism, traced into `Aggregation.average`."""

    settings: DifferentialPrivacy
    quorum: int
    noised_on_owners: bool  # the noise is added before sharing: the encoding must hold it (checked by calibrating)

    def privatize(self, update: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """On each owner: (what it shares, whether its norm was clipped, whether the round may use it)."""

    def noise_revealed(self, total: tf.Tensor) -> tf.Tensor:
        """On the output receiver: the revealed sum of the updates' values, as the model owner may use it."""

    def rdp(self, orders: np.ndarray, participants: int) -> np.ndarray:
        """Renyi DP of one round with this many owners, at each order."""


def calibrate(settings: DifferentialPrivacy, aggregation: Aggregation, values: int, owners: int, quorum: int) -> Mechanism:
    """The mechanism `settings` asks for, for updates of `values` values in `aggregation`'s encoding."""
    from fl.privacy.gaussian import GaussianMechanism
    from fl.privacy.skellam import SkellamMechanism

    if settings.central:
        return GaussianMechanism(settings, values, quorum)
    return SkellamMechanism.calibrate(
        settings, values, owners, quorum, aggregation.fractional_bits(), aggregation.capacity(owners)
    )


def clip_to_norm(update: tf.Tensor, clip_norm: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(`update` in float64 scaled down to L2 norm `clip_norm` if it is longer, whether it was)."""
    values = tf.cast(update, tf.float64)
    norm = tf.norm(values)
    scale = tf.minimum(tf.constant(1.0, tf.float64), clip_norm / tf.maximum(norm, 1e-300))
    return values * scale, norm > clip_norm
