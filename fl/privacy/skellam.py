"""The Skellam mechanism of distributed DP (Agarwal, Kairouz and Liu 2021), on each owner, before sharing.

Each owner clips its update to L2 norm `clip_norm`, scales it onto the integer lattice of
step 2^-lattice_bits, rounds it at random to integers, again until the rounded norm is
within the bound that the DDGauss paper's conditional rounding gives (Kairouz et al. 2021),
and adds Poisson(m) - Poisson(m) noise per coordinate from the secure-random op. Skellam,
not the discrete Gaussian, because a sum of Skellam draws is Skellam again: the revealed
sum carries exactly the noise the accountant assumes, at any number of owners. Each owner's
mean m is the target over the quorum, so any `min_owners` of them add at least the
configured noise. The lattice is the aggregation's own fixed point (or coarser), so the
noised values enter every protocol's encoding exactly, as integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from fl import secure_random
from fl.errors import RangeError
from fl.policies import DifferentialPrivacy
from fl.privacy import clip_to_norm

# a float32 holds every integer below 2^24 exactly: an owner's noised lattice value stays under it
FLOAT32_EXACT = 2**24
# noise beyond this many standard deviations is taken as never drawn (Gaussian-like tails: below 1e-30)
NOISE_TAIL = 12.0
# the conditional rounding's bound holds for one draw with probability >= 1 - e^-0.5 ...
ROUNDING_BETA = math.exp(-0.5)
# ... so an owner draws at most this often (failure below 1e-13) before it refuses the round
ROUNDING_ATTEMPTS = 64
UNIFORM_BITS = 24
# the rounded update's norm bound over the clip, at most (for a lattice this fine), in the float32 estimate below
ROUNDING_INFLATION = 1.1


@dataclass(frozen=True)
class SkellamMechanism:
    """One calibration of the mechanism: the lattice, the sensitivities of one owner's rounded update, the noise."""

    settings: DifferentialPrivacy
    values: int  # coordinates of an update
    quorum: int  # the fewest owners in a round: each owner's share of the noise is sized for them
    lattice_bits: int
    noised_on_owners = True

    @classmethod
    def calibrate(
        cls, settings: DifferentialPrivacy, values: int, owners: int, quorum: int, fractional_bits: int | None, capacity: float
    ) -> SkellamMechanism:
        """The finest lattice that both the aggregation's encoding (`fractional_bits`, None: any) and a float32
        hold; refused in one line when the sum of `owners` noised updates would not fit `capacity` (per input)."""
        per_owner = settings.clip_norm * (1 + NOISE_TAIL * settings.noise_multiplier * ROUNDING_INFLATION / math.sqrt(quorum))
        bits = math.floor(math.log2(FLOAT32_EXACT / per_owner)) - 1
        if fractional_bits is not None:
            bits = min(bits, fractional_bits)
        mechanism = cls(settings, values, quorum, bits)
        if mechanism.sum_bound(owners) > capacity * owners:
            raise RangeError(
                f"distributed DP: the sum of {owners} updates clipped to {settings.clip_norm:g} with noise multiplier "
                f"{settings.noise_multiplier:g} reaches ±{mechanism.sum_bound(owners):.4g}, beyond the encoding's "
                f"±{capacity * owners:.4g}; raise --value-range (a wider ring) or lower --dp-clip-norm"
            )
        if mechanism.scaled_clip < 4 * math.sqrt(values):
            raise RangeError(
                f"distributed DP: {values} values clipped to {settings.clip_norm:g} on a lattice of step 2^-{bits}: "
                "rounding would add more than the clip itself; raise --dp-clip-norm or lower --value-range (a finer ring)"
            )
        return mechanism

    @property
    def step(self) -> float:
        return 2.0**-self.lattice_bits

    @property
    def scaled_clip(self) -> float:
        return self.settings.clip_norm / self.step

    @property
    def l2_sensitivity(self) -> float:
        """The rounded update's norm bound (Kairouz et al. 2021, conditional randomized rounding)."""
        c, d = self.scaled_clip, self.values
        conditional = math.sqrt(c * c + d / 4 + math.sqrt(2 * math.log(1 / ROUNDING_BETA)) * (c + math.sqrt(d) / 2))
        return min(c + math.sqrt(d), conditional)

    @property
    def l1_sensitivity(self) -> float:
        """An integer vector's L1 norm is at most its squared L2 norm and at most sqrt(d) times its L2 norm."""
        l2 = self.l2_sensitivity
        return min(l2 * l2, math.sqrt(self.values) * l2)

    @property
    def total_mean(self) -> float:
        """The Skellam parameter the quorum's sum carries: variance 2m = (noise_multiplier * L2 sensitivity)^2."""
        return (self.settings.noise_multiplier * self.l2_sensitivity) ** 2 / 2

    @property
    def owner_mean(self) -> float:
        return self.total_mean / self.quorum

    def noise_stddev(self, owners: int) -> float:
        """Standard deviation of the revealed sum's noise per coordinate with `owners` owners, in update units."""
        return math.sqrt(2 * self.owner_mean * owners) * self.step

    def sum_bound(self, owners: int) -> float:
        """Largest |coordinate| of the noised sum of `owners` updates, tails included."""
        return owners * self.l2_sensitivity * self.step + NOISE_TAIL * self.noise_stddev(owners)

    def privatize(self, update: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """On the owner's device: (the noised update on the lattice, whether its norm was clipped, whether
        the rounding met its bound; if not, the round must be refused)."""
        values, clipped = clip_to_norm(update, self.settings.clip_norm)
        rounded, bounded = self._round(values / self.step)
        noise = tf.cast(secure_random.skellam(tf.shape(update), self.owner_mean), tf.float64)
        return tf.cast((rounded + noise) * self.step, tf.float32), clipped, bounded

    def noise_revealed(self, total: tf.Tensor) -> tf.Tensor:
        """Already noised: the owners' noise adds up to the sum's."""
        return total

    def rdp(self, orders: np.ndarray, participants: int) -> np.ndarray:
        """Agarwal, Kairouz and Liu's (2021) bound for the participants' summed Skellam noise, with 2*alpha in
        place of their 2*alpha - 1 (looser, never tighter)."""
        l1, l2, mean = self.l1_sensitivity, self.l2_sensitivity, self.owner_mean * participants
        gaussian = orders * l2 * l2 / (4 * mean)
        correction = np.minimum((2 * orders * l2 * l2 + 6 * l1) / (16 * mean * mean), 3 * l1 / (4 * mean))
        return gaussian + correction

    def _round(self, scaled: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Randomized rounding to integers, unbiased, drawn again until the norm is within the L2 sensitivity."""
        floor = tf.floor(scaled)
        fraction = scaled - floor
        bound = self.l2_sensitivity**2

        def draw() -> tf.Tensor:
            uniform = secure_random.uniform(tf.shape(scaled), 2**UNIFORM_BITS)
            return floor + tf.cast(tf.cast(uniform, tf.float64) / 2**UNIFORM_BITS < fraction, tf.float64)

        def again(attempt: tf.Tensor, rounded: tf.Tensor) -> tf.Tensor:
            return (attempt < ROUNDING_ATTEMPTS) & (tf.reduce_sum(tf.square(rounded)) > bound)

        _, rounded = tf.while_loop(again, lambda attempt, _: (attempt + 1, draw()), (tf.constant(1), draw()))
        return rounded, tf.reduce_sum(tf.square(rounded)) <= bound
