"""Differential privacy of the revealed sums: what is done to the updates, and what the revealed sums have cost.

`skellam.py` is distributed DP: each owner noises its update in the aggregation's integer
lattice before sharing, so only a noised sum ever exists. `gaussian.py` is central DP, the
baseline it is measured against: the model owner noises the sum it was revealed.
`accountant.py` composes either mechanism's rounds into epsilon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

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


def calibrate(
    settings: DifferentialPrivacy, values: int, owners: int, quorum: int, fractional_bits: int | None, capacity: float
) -> Mechanism:
    """The mechanism `settings` asks for, for updates of `values` values and this aggregation's encoding."""
    from fl.privacy.gaussian import GaussianMechanism
    from fl.privacy.skellam import SkellamMechanism

    if settings.central:
        return GaussianMechanism(settings, values, quorum)
    return SkellamMechanism.calibrate(settings, values, owners, quorum, fractional_bits, capacity)
