"""What the revealed sums have cost: owner-level epsilon for the run's delta, after every round.

Each round is one run of the mechanism over the round's participants (its Renyi DP comes
from the mechanism: fl/privacy/skellam.py, fl/privacy/gaussian.py); rounds compose by
adding RDP, and epsilon comes from dp-accounting's conversion
(`compute_epsilon`, the bound of Canonne, Kamath and Steinke 2020) over the library's own
orders. Every owner counts in every round it joins: no sampling amplification is claimed.
Rounds restored from a checkpoint are counted at the quorum's noise, the least they had.
"""

from __future__ import annotations

import numpy as np
from dp_accounting.rdp import compute_epsilon
from dp_accounting.rdp.rdp_privacy_accountant import DEFAULT_RDP_ORDERS

from fl.errors import FLError
from fl.privacy import Mechanism
from fl.rounds import RoundResult

ORDERS = np.asarray(DEFAULT_RDP_ORDERS, dtype=np.float64)


class PrivacyAccountant:
    """A RoundListener that adds each round's RDP and states epsilon in the round's metrics (`epsilon`)."""

    def __init__(self, mechanism: Mechanism) -> None:
        self.mechanism = mechanism
        self.delta = mechanism.settings.delta
        self.target_epsilon = mechanism.settings.target_epsilon
        self.rdp = np.zeros_like(ORDERS)
        self.rounds = 0
        self.quorum_round_rdp = mechanism.rdp(ORDERS, mechanism.quorum)  # a round with the fewest owners: the most it costs

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
        self.rdp = self.rdp + self.mechanism.rdp(ORDERS, len(result.participants))
        self.rounds += 1
        result.metrics["epsilon"] = self.epsilon

    def round_failed(self, index: int, error: FLError) -> None:
        """A failed round revealed nothing to the model owner: the model and the budget are unchanged."""
