"""What the revealed sums have cost: owner-level epsilon for the run's delta, after every round.

Each round is one Skellam mechanism over the round's participants, whose noise adds up to a
Skellam of mean (participants x each owner's mean). Its Renyi DP is Agarwal, Kairouz and
Liu's (2021) bound, written with 2*alpha in place of their 2*alpha - 1 (looser, never
tighter); rounds compose by adding RDP, and epsilon comes from dp-accounting's conversion
(`compute_epsilon`, the bound of Canonne, Kamath and Steinke 2020) over the library's own
orders. Every owner counts in every round it joins: no sampling amplification is claimed.
Rounds restored from a checkpoint are counted at the quorum's noise, the least they had.
"""

from __future__ import annotations

import numpy as np
from dp_accounting.rdp import compute_epsilon
from dp_accounting.rdp.rdp_privacy_accountant import DEFAULT_RDP_ORDERS

from fl.errors import FLError
from fl.privacy.mechanism import SkellamMechanism
from fl.rounds import RoundResult

ORDERS = np.asarray(DEFAULT_RDP_ORDERS, dtype=np.float64)


def skellam_rdp(orders: np.ndarray, l1: float, l2: float, mean: float) -> np.ndarray:
    """RDP of adding Poisson(mean) - Poisson(mean) per coordinate to an integer vector of these sensitivities."""
    gaussian = orders * l2 * l2 / (4 * mean)
    correction = np.minimum((2 * orders * l2 * l2 + 6 * l1) / (16 * mean * mean), 3 * l1 / (4 * mean))
    return gaussian + correction


def round_rdp(mechanism: SkellamMechanism, participants: int) -> np.ndarray:
    return skellam_rdp(ORDERS, mechanism.l1_sensitivity, mechanism.l2_sensitivity, mechanism.owner_mean * participants)


class PrivacyAccountant:
    """A RoundListener that adds each round's RDP and states epsilon in the round's metrics (`epsilon`)."""

    def __init__(self, mechanism: SkellamMechanism) -> None:
        self.mechanism = mechanism
        self.delta = mechanism.settings.delta
        self.target_epsilon = mechanism.settings.target_epsilon
        self.rdp = np.zeros_like(ORDERS)
        self.rounds = 0
        self.quorum_round_rdp = round_rdp(mechanism, mechanism.quorum)  # a round with the fewest owners: the most it costs

    @property
    def epsilon(self) -> float:
        return float(compute_epsilon(ORDERS, self.rdp, self.delta)[0]) if self.rounds else 0.0

    def epsilon_after(self, rounds: int) -> float:
        """Epsilon once `rounds` more rounds at the quorum's noise are spent."""
        return float(compute_epsilon(ORDERS, self.rdp + rounds * self.quorum_round_rdp, self.delta)[0])

    def restore(self, completed_rounds: int) -> None:
        """A resumed run's earlier rounds, counted at the quorum's noise."""
        self.rdp = completed_rounds * self.quorum_round_rdp
        self.rounds = completed_rounds

    def _over_target(self) -> float | None:
        """Epsilon after the next round, when that is above the target (else None)."""
        if self.target_epsilon is None:
            return None
        after = self.epsilon_after(1)
        return after if after > self.target_epsilon else None

    def check_budget(self) -> str | None:
        """Why the next round may not run (it would spend more than the target), or None."""
        after = self._over_target()
        if after is None:
            return None
        return (
            f"stopped before round {self.rounds}: it would bring epsilon to {after:.4g}, above --dp-target-epsilon "
            f"{self.target_epsilon:g} (delta {self.delta:g}); spent so far: {self.epsilon:.4g}"
        )

    def check_first_round(self) -> None:
        """A target that not even one more round can meet is a bad setting, refused before training."""
        after = self._over_target()
        if after is not None:
            raise FLError(
                f"--dp-target-epsilon {self.target_epsilon:g}: {'one round' if not self.rounds else 'the next round'} "
                f"already brings epsilon to {after:.4g} at delta {self.delta:g}; raise the target "
                "or --dp-noise-multiplier"
            )

    def round_completed(self, result: RoundResult) -> None:
        self.rdp = self.rdp + round_rdp(self.mechanism, len(result.participants))
        self.rounds += 1
        result.metrics["epsilon"] = self.epsilon

    def round_failed(self, index: int, error: FLError) -> None:
        """A failed round revealed nothing to the model owner: the model and the budget are unchanged."""
