"""What every aggregation shares: the fixed stages of a secure average, the output receiver and the value range.

`Aggregation.average` is the one way to average, traced into the compiled round:
range check on each owner -> share -> sum -> reveal on the output receiver -> one
division. Protocols supply share, sum and reveal; none can skip the range check.

Updates are averaged in fixed point, so each aggregation declares the range
[-value_range, value_range] it accepts. A coordinate outside it is clipped and
counted (`out_of_range="clip"`) or the round is refused (`"refuse"`); it is never
silently wrapped around the ring. Clipping a few outliers is robust averaging;
clipping a large part of an update is a ruined model, so a round in which one owner
had more than `max_clipped_fraction` of its values clipped is refused. The training
metrics riding at the end of each update (loss, accuracy) are bounded only by what
the encoding can carry, never by `value_range`: a diverging loss must show as it is.
The refusal is decided inside the round (`Averaged.accepted`, which gates the model
update) and explained afterwards by `refusal`, from the same limit.

The average is weighted (FedAvg by examples, fl/policies.py `Weighting`): each owner
multiplies its checked update by its weight in [0, 1] and appends the weight, so the
weights are summed inside the same secure sum and the receiver learns only their total,
by which it divides. Uniform weighting is weight 1 for everyone: the total is the public
number of owners. A round whose total weight is zero is refused.

With distributed DP (fl/privacy/skellam.py) each owner clips its checked update to an L2
norm and adds its share of integer noise on the encoding's lattice before sharing, so the
sum is the only thing revealed and it is already noised. With central DP, the baseline
(fl/privacy/gaussian.py), owners only clip and the receiver noises the revealed sum. The
average is then uniform and the training metrics do not ride along (they would be revealed
un-noised).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from fl.cluster import DATA_OWNER, Cluster, Player
from fl.errors import FLError, RangeError, UpdateMismatchError
from fl.policies import RangePolicy

if TYPE_CHECKING:
    from fl.privacy import Mechanism

# the weight rides in the shared vector right after the update's values
WEIGHT_SLOTS = 1


@dataclass
class Averaged:
    """A traced average: every tensor but the per-owner checks lives on the output receiver."""

    mean: tf.Tensor
    accepted: tf.Tensor
    clipped: dict[Player, tf.Tensor]
    finite: dict[Player, tf.Tensor]
    overweight: dict[Player, tf.Tensor]  # the owner's weight was above 1 (more examples than max_weight)
    norm_clipped: dict[Player, tf.Tensor]  # DP: the owner's update was clipped to the clip norm
    rounded: dict[Player, tf.Tensor]  # DP: the owner's randomized rounding met its norm bound
    total_weight: tf.Tensor
    stage_ends: dict[str, tf.Tensor]


class Aggregation(ABC):
    """Averages one update vector per data owner; only `output_receiver` learns the average."""

    name: str = "aggregation"

    def __init__(self, output_receiver: Player, policy: RangePolicy = RangePolicy()) -> None:
        self.output_receiver = output_receiver
        self.policy = policy

    @property
    def value_range(self) -> float:
        return float(self.policy.value_range)

    @property
    def out_of_range(self) -> str:
        return self.policy.out_of_range

    @property
    def max_clipped_fraction(self) -> float:
        return float(self.policy.max_clipped_fraction)

    @classmethod
    @abstractmethod
    def from_cluster(cls, cluster: Cluster, policy: RangePolicy = RangePolicy()) -> Aggregation:
        """Wired to the cluster's players as `fl train` and `fl bench` run it (fl/aggregation/registry.py)."""

    @property
    def players(self) -> list[Player]:
        """Players besides the data owners that must be up for a round."""
        return [self.output_receiver]

    def for_owners(self, owners: list[Player]) -> Aggregation:
        """This aggregation as it runs when only `owners` delivered their updates (a quorum round).

        A data owner that did not deliver cannot serve as a compute player either.
        """
        absent = [player.name for player in self.players if player.role == DATA_OWNER and player not in owners]
        if absent:
            raise FLError(f"{', '.join(absent)} left the round but {self.name} computes on them")
        return self

    def fractional_bits(self) -> int | None:
        """The encoding's fixed-point resolution, 2^-bits (None: floats, any lattice a float32 holds)."""
        return None

    def capacity(self, inputs: int) -> float:
        """Largest value_range the encoding can sum over `inputs` updates without wrapping."""
        return float("inf")

    def metric_capacity(self, inputs: int) -> float:
        """Largest training metric the encoding carries over `inputs` updates."""
        return self.capacity(inputs)

    def check_capacity(self, inputs: int) -> None:
        capacity = self.capacity(inputs)
        if self.value_range > capacity:
            raise RangeError(
                f"{self.name}: value_range {self.value_range:g} over {inputs} updates exceeds the encoding's "
                f"capacity {capacity:g}; lower value_range"
            )

    def clip_limit(self, values: int) -> int:
        """Most values of one owner's update that may be clipped before the round is refused."""
        return 0 if self.out_of_range == "refuse" else math.floor(self.max_clipped_fraction * values)

    def average(
        self,
        updates: Mapping[Player, tf.Tensor],
        metric_count: int = 0,
        weights: Mapping[Player, tf.Tensor] | None = None,
        privacy: Mechanism | None = None,
    ) -> Averaged:
        """Trace the stages: range check and weighting (or DP's clipping and noise) on each owner, share, sum,
        reveal, divide by the total weight.

        The last `metric_count` values of each update are its training metrics. Non-finite
        values are zeroed before sharing (they cannot be encoded) and refuse the round.
        `weights`: each owner's scalar weight in [0, 1], on the owner (None: 1 each, uniform).
        `privacy`: calibrated for this encoding, uniform and without metrics.
        """
        if privacy is not None and (weights is not None or metric_count):
            raise ValueError("DP averages uniformly and carries no training metrics")
        sizes = {owner.name: int(update.shape[0]) for owner, update in updates.items()}
        if len(set(sizes.values())) != 1:
            listed = ", ".join(f"{name}={size}" for name, size in sizes.items())
            raise UpdateMismatchError(
                f"data owners sent updates of different sizes ({listed}): every owner must train the same model"
            )
        if privacy is None or not privacy.noised_on_owners:  # noise in the ring: its calibration checked the capacity
            self.check_capacity(len(updates))
        carried = self.metric_capacity(len(updates))
        values = next(iter(sizes.values())) - metric_count
        checked, clipped, finite, overweight, norm_clipped, rounded = {}, {}, {}, {}, {}, {}
        for owner, update in updates.items():
            with tf.device(owner.device_name):
                weight = tf.ones([]) if weights is None else tf.reshape(tf.cast(weights[owner], tf.float32), [])
                is_finite = tf.math.is_finite(update)
                finite[owner] = tf.reduce_all(is_finite) & tf.math.is_finite(weight)
                overweight[owner] = weight > 1.0
                weight = tf.clip_by_value(tf.where(tf.math.is_finite(weight), weight, 0.0), 0.0, 1.0)
                clean = tf.where(is_finite, update, tf.zeros_like(update))
                deltas, metrics = clean[:values], clean[values:]
                clipped[owner] = tf.reduce_sum(tf.cast(tf.abs(deltas) > self.value_range, tf.int32))
                deltas = tf.clip_by_value(deltas, -self.value_range, self.value_range)
                if privacy is None:
                    norm_clipped[owner], rounded[owner] = tf.constant(False), tf.constant(True)
                else:
                    deltas, norm_clipped[owner], rounded[owner] = privacy.privatize(deltas)
                checked[owner] = tf.concat(
                    [
                        weight * deltas,
                        weight[tf.newaxis],
                        weight * tf.clip_by_value(metrics, -carried, carried),
                    ],
                    axis=0,
                )
        held = self.share(checked, metric_count)
        stage_ends = {"sharing": self._stamp_after(self.held_tensors(held))}
        summed = self.sum(held)
        stage_ends["aggregation"] = self._stamp_after([*self.held_tensors(summed), stage_ends["sharing"]])
        with tf.device(self.output_receiver.device_name):
            total = self.reveal(summed, metric_count)
            if privacy is not None:
                total = tf.concat([privacy.noise_revealed(total[:values]), total[values:]], axis=0)
            total_weight = total[values]
            mean = tf.concat([total[:values], total[values + WEIGHT_SLOTS :]], axis=0) / tf.maximum(total_weight, 1e-30)
            limit = self.clip_limit(values)
            accepted = tf.reduce_all(
                [finite[owner] & ~overweight[owner] & rounded[owner] & (clipped[owner] <= limit) for owner in updates]
            ) & (total_weight > 0)
        stage_ends["reveal"] = self._stamp_after([mean, stage_ends["aggregation"]])
        return Averaged(mean, accepted, clipped, finite, overweight, norm_clipped, rounded, total_weight, stage_ends)

    def refusal(
        self,
        clipped: Mapping[str, int],
        finite: Mapping[str, bool],
        values: int,
        overweight: Mapping[str, bool] | None = None,
        total_weight: float = 1.0,
        rounded: Mapping[str, bool] | None = None,
    ) -> str | None:
        """Why a round with these per-owner checks was refused (the rule `average` applied), or None."""
        limit = self.clip_limit(values)
        for owner, count in clipped.items():
            if not finite[owner]:
                return f"update from {owner} has NaN or infinite values; lower the learning rate"
            if rounded and not rounded[owner]:
                return f"{owner}'s randomized rounding missed its norm bound in every attempt (distributed DP); run again"
            if overweight and overweight[owner]:
                return f"{owner} has more examples in a local epoch than max_weight allows; raise it (fl train --max-weight)"
            if count > limit and self.out_of_range == "refuse":
                return (
                    f"update from {owner} has {count} values outside ±{self.value_range:g}; "
                    "raise value_range or use out_of_range='clip'"
                )
            if count > limit:
                return (
                    f"update from {owner} has {count} of {values} values ({count / values:.1%}) outside "
                    f"±{self.value_range:g}, more than max_clipped_fraction {self.max_clipped_fraction:.1%}: "
                    "lower the learning rate or raise value_range"
                )
        if not total_weight > 0:
            return "the owners' total weight is zero (no owner trained on any example this round)"
        return None

    def _stamp_after(self, tensors: list[tf.Tensor]) -> tf.Tensor:
        """The receiver's clock once `tensors` (and the previous stage's stamp) exist: one clock for every stage."""
        with tf.device(self.output_receiver.device_name), tf.control_dependencies(tensors):
            return tf.timestamp()

    @abstractmethod
    def share(self, updates: Mapping[Player, tf.Tensor], metric_count: int) -> Any:
        """Each owner's checked update, secret-shared (or sent) to the players that sum it."""

    @abstractmethod
    def sum(self, held: Any) -> Any:
        """What each summing player holds, added up on that player."""

    @abstractmethod
    def reveal(self, summed: Any, metric_count: int) -> tf.Tensor:
        """The float32 sum of the updates, on the output receiver's device (called under it)."""

    def held_tensors(self, held: Any) -> list[tf.Tensor]:
        """The tensors behind what `share` or `sum` returned: a stage has ended once they exist."""
        return tf.nest.flatten(list(held.values()) if isinstance(held, Mapping) else held)

    def expected_bytes(self, owners: list[Player], size: int) -> dict[str, int]:
        """Bytes each player sends per round by the protocol itself (payload, no framing), for a vector of `size`
        values as it is shared (an update of `size - WEIGHT_SLOTS` values and its weight).

        Players whose share of the traffic the protocol does not fix in advance are left out.
        """
        return {}

    def minimum_sent_bytes(self, size: int) -> int:
        """Least any owner can send: its update once, as one vector of this aggregation's encoding."""
        return self.element_bytes() * size

    def element_bytes(self) -> int:
        """Bytes of one encoded update value on the wire."""
        raise NotImplementedError

    def describe(self) -> str:
        """The encoding, as `fl train` states it."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_receiver={self.output_receiver.name}, value_range={self.value_range:g})"
