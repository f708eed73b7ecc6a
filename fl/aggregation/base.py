"""What every aggregation shares: its output receiver and the declared value range.

Updates are averaged in fixed point, so each aggregation declares the range
[-value_range, value_range] it accepts. A coordinate outside it is clipped and
counted (`out_of_range="clip"`) or the round is refused (`"refuse"`); it is
never silently wrapped around the ring. Clipping a few outliers is robust
averaging; clipping a large part of an update is a ruined model, so a round in
which one owner had more than `max_clipped_fraction` of its values clipped is
refused. The training metrics riding at the end of each update (loss, accuracy)
are bounded only by what the encoding can carry, never by `value_range`: a
diverging loss must show as it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import tensorflow as tf

from fl.cluster import Player
from fl.errors import RangeError, UpdateMismatchError
from fl.phases import PhaseClock

OUT_OF_RANGE_POLICIES = ("clip", "refuse")
DEFAULT_MAX_CLIPPED_FRACTION = 0.01


@dataclass
class BoundedUpdates:
    updates: dict[Player, tf.Tensor]
    clipped: dict[str, int]


class Aggregation(ABC):
    """Averages one update vector per data owner; only `output_receiver` learns the average."""

    name: str = "aggregation"

    def __init__(
        self,
        output_receiver: Player,
        value_range: float = 32.0,
        out_of_range: str = "clip",
        max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION,
    ) -> None:
        if out_of_range not in OUT_OF_RANGE_POLICIES:
            raise ValueError(f"out_of_range={out_of_range!r}; use one of {', '.join(OUT_OF_RANGE_POLICIES)}")
        if not value_range > 0:
            raise ValueError(f"value_range must be > 0, got {value_range}")
        if not 0 <= max_clipped_fraction <= 1:
            raise ValueError(f"max_clipped_fraction must be in [0, 1], got {max_clipped_fraction}")
        self.output_receiver = output_receiver
        self.value_range = float(value_range)
        self.out_of_range = out_of_range
        self.max_clipped_fraction = float(max_clipped_fraction)

    @property
    def players(self) -> list[Player]:
        """Players besides the data owners that must be up for a round."""
        return [self.output_receiver]

    def capacity(self, inputs: int) -> float:
        """Largest value_range the encoding can sum over `inputs` updates without wrapping."""
        return float("inf")

    def check_capacity(self, inputs: int) -> None:
        capacity = self.capacity(inputs)
        if self.value_range > capacity:
            raise RangeError(
                f"{self.name}: value_range {self.value_range:g} over {inputs} updates exceeds the encoding's "
                f"capacity {capacity:g}; lower value_range"
            )

    def bound(self, updates: Mapping[Player, tf.Tensor], metric_count: int = 0) -> BoundedUpdates:
        """Check shapes and range on each owner's device; clip or refuse out-of-range values.

        The last `metric_count` values of each update are its training metrics: clipped only at the encoding's capacity.
        """
        sizes = {owner.name: int(update.shape[0]) for owner, update in updates.items()}
        if len(set(sizes.values())) != 1:
            listed = ", ".join(f"{name}={size}" for name, size in sizes.items())
            raise UpdateMismatchError(
                f"data owners sent updates of different sizes ({listed}): every owner must train the same model"
            )
        self.check_capacity(len(updates))
        carried = self.capacity(len(updates))
        values = next(iter(sizes.values())) - metric_count
        bounded, clipped = {}, {}
        for owner, update in updates.items():
            with tf.device(owner.device_name):
                finite = tf.reduce_all(tf.math.is_finite(update))
                deltas, metrics = update[:values], update[values:]
                outside = tf.reduce_sum(tf.cast(tf.abs(deltas) > self.value_range, tf.int64))
                checked = tf.concat(
                    [tf.clip_by_value(deltas, -self.value_range, self.value_range), tf.clip_by_value(metrics, -carried, carried)],
                    axis=0,
                )
            if not bool(finite):
                raise RangeError(f"update from {owner.name} has NaN or infinite values; lower the learning rate")
            clipped[owner.name] = int(outside)
            if clipped[owner.name] and self.out_of_range == "refuse":
                raise RangeError(
                    f"update from {owner.name} has {clipped[owner.name]} values outside ±{self.value_range:g}; "
                    "raise value_range or use out_of_range='clip'"
                )
            if clipped[owner.name] > self.max_clipped_fraction * values:
                raise RangeError(
                    f"update from {owner.name} has {clipped[owner.name]} of {values} values "
                    f"({clipped[owner.name] / values:.1%}) outside ±{self.value_range:g}, more than max_clipped_fraction "
                    f"{self.max_clipped_fraction:.1%}: lower the learning rate or raise value_range"
                )
            bounded[owner] = checked
        return BoundedUpdates(bounded, clipped)

    @abstractmethod
    def aggregate(self, updates: Mapping[Player, tf.Tensor], clock: PhaseClock | None = None) -> tf.Tensor:
        """The mean of `updates`, as a float32 tensor on the output receiver's device.

        `clock` is charged with the sharing, aggregation and reveal phases as they end.
        """

    def expected_bytes(self, owners: list[Player], size: int) -> dict[str, int]:
        """Bytes each player sends per round by the protocol itself (payload, no framing).

        Players whose share of the traffic the protocol does not fix in advance are left out.
        """
        return {}

    def minimum_sent_bytes(self, size: int) -> int:
        """Least any owner can send: its update once, as one vector of this aggregation's encoding."""
        return self.element_bytes() * size

    def element_bytes(self) -> int:
        """Bytes of one encoded update value on the wire."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_receiver={self.output_receiver.name}, value_range={self.value_range:g})"
