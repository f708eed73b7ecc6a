"""What a round computes, traced once into graph functions that run on the players.

1. Training (`training_stage`): on one data owner, read the model owner's weights, train the
   replica locally and keep the update (delta, metrics, the owner's example count) in a
   variable on the owner; the call returns only the owner's clock stamp.
2. Aggregation (`aggregation_stage`): read the updates where they are kept, weight them,
   run range check, sharing, secure sum, reveal and division (fl/aggregation/base.py), then
   the server update on the model owner (fl/server_update.py), applied only if the round was
   accepted, the weights stay finite and the model owner's clock is before the deadline. A
   round that fails or is refused anywhere leaves the weights and the optimizer state exactly
   as they were; the driver reads back one small report vector.

The graphs are built with `tf.compat.v1.wrap_function`, never per round: functions registered
on remote workers are never released, so tracing each round would grow the players' memory.
Not `tf.function`: its automatic control dependencies add a node on the caller, the driver,
which the players cannot reach on the mesh. Each graph has one output, on a player, which
waits for every stateful op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from fl.aggregation.base import WEIGHT_SLOTS, Aggregation, Averaged
from fl.cluster import Player
from fl.local_training import OwnerTrainer
from fl.phases import STAGES
from fl.policies import Weighting
from fl.server_update import ServerUpdate

if TYPE_CHECKING:
    from fl.privacy import Mechanism

# the driver's own device: a compiled call is issued from here, its ops run on the players
DRIVER_DEVICE = "/job:localhost/replica:0/task:0/device:CPU:0"
# what a round's report says besides the aggregation's own checks
OUTCOME_FLAGS = ("weights_finite", "in_time")


def compiled(fn: Callable[..., tf.Tensor], *inputs: tf.TensorSpec) -> Callable[..., tf.Tensor]:
    """`fn` traced once into a graph function: one output on a player, no control node on the driver."""
    return tf.compat.v1.wrap_function(fn, signature=list(inputs))


def call_on_driver(function: Callable[..., tf.Tensor], *inputs: tf.Tensor) -> np.ndarray:
    """Run a compiled call from the driver and read its (small) output back."""
    with tf.device(DRIVER_DEVICE):
        return function(*inputs).numpy()


@dataclass
class Report:
    """What a compiled aggregation reports to the driver, unpacked from one float64 vector."""

    accepted: bool
    flags: dict[str, bool]
    clipped: dict[str, int]
    finite: dict[str, bool]
    overweight: dict[str, bool]
    norm_clipped: dict[str, bool]
    rounded: dict[str, bool]
    total_weight: float
    values: np.ndarray
    stage_ends: dict[str, float]

    @staticmethod
    def pack(averaged: Averaged, owners: Sequence[Player], flags: Sequence[tf.Tensor], values: Sequence[tf.Tensor]) -> tf.Tensor:
        """On the output receiver: acceptance, the caller's `flags`, per-owner checks, total weight, `values`,
        each stage's end."""
        head = [averaged.accepted, *flags, *(averaged.finite[owner] for owner in owners)]
        head += [averaged.overweight[owner] for owner in owners]
        head += [averaged.norm_clipped[owner] for owner in owners]
        head += [averaged.rounded[owner] for owner in owners]
        head = [tf.cast(flag, tf.float64) for flag in head]
        head += [tf.cast(averaged.clipped[owner], tf.float64) for owner in owners]
        head.append(tf.cast(averaged.total_weight, tf.float64))
        stamps = [averaged.stage_ends[stage] for stage in STAGES]
        return tf.concat([tf.stack(head), *(tf.cast(v, tf.float64) for v in values), tf.stack(stamps)], axis=0)

    @classmethod
    def unpack(cls, vector: np.ndarray, owners: Sequence[Player], flag_names: Sequence[str] = ()) -> Report:
        names = [owner.name for owner in owners]
        at = 1 + len(flag_names)
        sections = []
        for _ in range(5):  # finite, overweight, norm_clipped, rounded, clipped
            sections.append(dict(zip(names, vector[at : at + len(names)])))
            at += len(names)
        finite, overweight, norm_clipped, rounded, clipped = sections
        return cls(
            accepted=bool(vector[0]),
            flags={name: bool(v) for name, v in zip(flag_names, vector[1 : 1 + len(flag_names)])},
            finite={name: bool(v) for name, v in finite.items()},
            overweight={name: bool(v) for name, v in overweight.items()},
            norm_clipped={name: bool(v) for name, v in norm_clipped.items()},
            rounded={name: bool(v) for name, v in rounded.items()},
            clipped={name: int(v) for name, v in clipped.items()},
            total_weight=float(vector[at]),
            values=vector[at + 1 : -len(STAGES)],
            stage_ends=dict(zip(STAGES, map(float, vector[-len(STAGES) :]))),
        )

    def refusal(self, aggregation: Aggregation, values: int) -> str | None:
        """Why the aggregation refused this round, from the same rule it applied."""
        return aggregation.refusal(self.clipped, self.finite, values, self.overweight, self.total_weight, self.rounded)


class CompiledAverage:
    """The aggregation stages alone, compiled: for benchmarks and tests, the same path a round takes.

    The mean stays on the output receiver, in `mean`; a call returns the report. `weights`, when given
    to a call, are each owner's weight in [0, 1]; under `privacy` they are ignored (uniform).
    """

    def __init__(
        self,
        aggregation: Aggregation,
        owners: list[Player],
        size: int,
        metric_count: int = 0,
        privacy: Mechanism | None = None,
    ) -> None:
        self.aggregation = aggregation
        self.owners = list(owners)
        self.size = size
        self.values = size - metric_count
        with tf.device(aggregation.output_receiver.device_name):
            self.mean = tf.Variable(tf.zeros([size]), trainable=False)

        def average(*inputs: tf.Tensor) -> tf.Tensor:
            updates, weights = inputs[: len(self.owners)], inputs[len(self.owners) :]
            averaged = aggregation.average(
                dict(zip(self.owners, updates)),
                metric_count,
                None if privacy else dict(zip(self.owners, weights)),
                privacy,
            )
            with tf.device(aggregation.output_receiver.device_name):
                kept = self.mean.assign(averaged.mean)
                with tf.control_dependencies([kept]):
                    return Report.pack(averaged, self.owners, [], [])

        specs = [tf.TensorSpec([size], tf.float32) for _ in self.owners] + [tf.TensorSpec([], tf.float32) for _ in self.owners]
        self._call = compiled(average, *specs)

    def __call__(self, updates: Mapping[Player, tf.Tensor], weights: Mapping[Player, tf.Tensor] | None = None) -> Report:
        if weights is None:
            weights = {}
            for owner in self.owners:
                with tf.device(owner.device_name):
                    weights[owner] = tf.identity(tf.ones([]))
        inputs = [updates[owner] for owner in self.owners] + [weights[owner] for owner in self.owners]
        return Report.unpack(call_on_driver(self._call, *inputs), self.owners)

    def refusal(self, report: Report) -> str | None:
        return report.refusal(self.aggregation, self.values)

    def expected_bytes(self) -> dict[str, int]:
        """What the protocol itself sends per call: the update and its weight."""
        return self.aggregation.expected_bytes(self.owners, self.size + WEIGHT_SLOTS)


def training_stage(trainer: OwnerTrainer, kept: tf.Variable, weights: Sequence[tf.Variable]) -> Callable[..., tf.Tensor]:
    """One owner's training call: `weights` (the model's) and the round's seed in, the update kept in `kept`."""
    owner = trainer.owner

    def train(*inputs: tf.Tensor) -> tf.Tensor:
        update = trainer.update(list(inputs[:-1]), inputs[-1])
        with tf.device(owner.device_name):
            written = kept.assign(update)
            with tf.control_dependencies([written]):
                return tf.timestamp()

    specs = [tf.TensorSpec(variable.shape, variable.dtype) for variable in weights]
    return compiled(train, *specs, tf.TensorSpec([], tf.int64))


def aggregation_stage(
    kept: Mapping[Player, tf.Variable],
    aggregation: Aggregation,
    weighting: Weighting,
    server_update: ServerUpdate,
    model_owner: Player,
    metric_count: int,
    privacy: Mechanism | None = None,
) -> Callable[..., tf.Tensor]:
    """The updates kept on these owners averaged and applied, as one call taking the round's deadline.

    The model owner applies the average only if accepted, finite and before the deadline by its own clock.
    Under `privacy` the owners' metrics stay on the owners: only the noised deltas are shared.
    """
    owners = list(kept)
    model_weights = server_update.weights
    sizes = [int(np.prod(v.shape)) for v in model_weights]
    shared_metrics = 0 if privacy else metric_count

    def aggregate_and_apply(deadline: tf.Tensor) -> tf.Tensor:
        updates, weights = {}, {}
        for owner in owners:
            with tf.device(owner.device_name):
                vector = kept[owner].read_value()
                updates[owner] = vector[: sum(sizes) + shared_metrics]
                weights[owner] = vector[-1] / weighting.max_weight
        uniform = privacy is not None or weighting.mode == "uniform"
        averaged = aggregation.average(updates, shared_metrics, None if uniform else weights, privacy)
        with tf.device(model_owner.device_name):
            parts = tf.split(averaged.mean, [*sizes, shared_metrics])
            deltas = [tf.reshape(delta, v.shape) for v, delta in zip(model_weights, parts)]
            in_time = tf.timestamp() < deadline
            assignments, weights_finite, _ = server_update.apply(deltas, averaged.accepted & in_time)
            with tf.control_dependencies(assignments):
                return Report.pack(averaged, owners, [weights_finite, in_time], [parts[-1]])

    return compiled(aggregate_and_apply, tf.TensorSpec([], tf.float64))
