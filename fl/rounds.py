"""One federated round, orchestrated by the driver in two compiled stages.

1. Training: the model owner's weights go to every data owner, and each owner
   trains its replica locally. The owners' calls are issued at once, one thread
   each, so their transfers and their training overlap.
2. Aggregation: one compiled call runs range check, sharing, secure sum, reveal and
   division (fl/aggregation/base.py), then the model update on the model owner,
   which assigns the new weights only if the round was accepted and they are
   finite. A round that fails or is refused anywhere leaves the weights exactly as
   they were; the driver reads back one small report vector.

The graphs are built with `tf.compat.v1.wrap_function`, once per runner, never per
round: functions registered on remote workers are never released, so tracing each
round would grow the players' memory. Not `tf.function`: its automatic control
dependencies add a node on the caller, the driver, which the players cannot reach
on the mesh. Each graph has one output, on a player, which waits for every
stateful op.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import tensorflow as tf

from fl.aggregation.base import Aggregation, Averaged
from fl.cluster import Cluster, Player, require_reachable, unreachable
from fl.errors import FLError, RangeError, RoundFailedError, first_line
from fl.local_training import OwnerTrainer, TrainingSpec
from fl.phases import STAGES

# the driver's own device: a compiled call is issued from here, its ops run on the players
DRIVER_DEVICE = "/job:localhost/replica:0/task:0/device:CPU:0"


@dataclass
class RoundResult:
    index: int
    metrics: dict[str, float]
    seconds: float
    phase_seconds: dict[str, float] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)
    expected_bytes: dict[str, int] = field(default_factory=dict)
    owner_training_seconds: dict[str, float] = field(default_factory=dict)


class RoundListener(Protocol):
    """Told of every round's outcome, e.g. to export metrics."""

    def round_completed(self, result: RoundResult) -> None: ...

    def round_failed(self, index: int, error: FLError) -> None: ...


def compiled(fn: Callable[..., tf.Tensor], *inputs: tf.TensorSpec) -> Callable[..., tf.Tensor]:
    """`fn` traced once into a graph function: one output on a player, no control node on the driver."""
    return tf.compat.v1.wrap_function(fn, signature=list(inputs))


@dataclass
class Report:
    """What a compiled aggregation reports to the driver, unpacked from one float64 vector."""

    applied: bool
    accepted: bool
    clipped: dict[str, int]
    finite: dict[str, bool]
    values: np.ndarray
    stage_ends: dict[str, float]

    @staticmethod
    def pack(averaged: Averaged, owners: list[Player], applied: tf.Tensor, values: list[tf.Tensor]) -> tf.Tensor:
        """On the output receiver: flags, per-owner checks, `values`, then each stage's end."""
        flags = [tf.cast(applied, tf.float64), tf.cast(averaged.accepted, tf.float64)]
        flags += [tf.cast(averaged.finite[owner], tf.float64) for owner in owners]
        flags += [tf.cast(averaged.clipped[owner], tf.float64) for owner in owners]
        stamps = [averaged.stage_ends[stage] for stage in STAGES]
        return tf.concat([tf.stack(flags), *(tf.cast(v, tf.float64) for v in values), tf.stack(stamps)], axis=0)

    @classmethod
    def unpack(cls, vector: np.ndarray, owners: list[Player]) -> Report:
        count = len(owners)
        names = [owner.name for owner in owners]
        return cls(
            applied=bool(vector[0]),
            accepted=bool(vector[1]),
            finite={name: bool(v) for name, v in zip(names, vector[2 : 2 + count])},
            clipped={name: int(v) for name, v in zip(names, vector[2 + count : 2 + 2 * count])},
            values=vector[2 + 2 * count : -len(STAGES)],
            stage_ends=dict(zip(STAGES, map(float, vector[-len(STAGES) :]))),
        )


def call_on_driver(function: Callable[..., tf.Tensor], *inputs: tf.Tensor) -> np.ndarray:
    """Run a compiled call from the driver and read its (small) output back."""
    with tf.device(DRIVER_DEVICE):
        return function(*inputs).numpy()


class CompiledAverage:
    """The aggregation stages alone, compiled: for benchmarks and tests, the same path a round takes.

    The mean stays on the output receiver, in `mean`; a call returns the report.
    """

    def __init__(self, aggregation: Aggregation, owners: list[Player], size: int, metric_count: int = 0) -> None:
        self.aggregation = aggregation
        self.owners = list(owners)
        self.values = size - metric_count
        with tf.device(aggregation.output_receiver.device_name):
            self.mean = tf.Variable(tf.zeros([size]), trainable=False)

        def average(*updates: tf.Tensor) -> tf.Tensor:
            averaged = aggregation.average(dict(zip(self.owners, updates)), metric_count)
            with tf.device(aggregation.output_receiver.device_name):
                kept = self.mean.assign(averaged.mean)
                with tf.control_dependencies([kept]):
                    return Report.pack(averaged, self.owners, averaged.accepted, [])

        self._call = compiled(average, *(tf.TensorSpec([size], tf.float32) for _ in self.owners))

    def __call__(self, updates: Mapping[Player, tf.Tensor]) -> Report:
        return Report.unpack(call_on_driver(self._call, *(updates[owner] for owner in self.owners)), self.owners)

    def refusal(self, report: Report) -> str | None:
        return self.aggregation.refusal(report.clipped, report.finite, self.values)


class RoundRunner:
    def __init__(
        self,
        cluster: Cluster,
        model: tf.keras.Model,
        aggregation: Aggregation,
        trainers: dict[Player, OwnerTrainer],
        spec: TrainingSpec,
        server_learning_rate: float,
        seed: int,
    ) -> None:
        self.cluster = cluster
        self.model = model
        self.model_owner = cluster.model_owner
        self.aggregation = aggregation
        self.trainers = trainers
        self.spec = spec
        self.server_learning_rate = server_learning_rate
        self.seed = seed
        self.sizes = [int(np.prod(v.shape)) for v in model.weights]
        self._aggregate_and_apply: Callable[..., tf.Tensor] | None = None

    @property
    def players(self) -> list[Player]:
        """Everyone a round needs: the model owner, the training owners, the aggregation's players."""
        return list(dict.fromkeys([self.model_owner, *self.trainers, *self.aggregation.players]))

    @property
    def metric_count(self) -> int:
        return len(self.spec.metric_names)

    @property
    def update_size(self) -> int:
        return sum(self.sizes) + self.metric_count

    def run(self, index: int) -> RoundResult:
        require_reachable(self.players)
        try:
            return self._run(index)
        except tf.errors.OpError as error:
            raise RoundFailedError(
                f"round {index} failed: {self._culprits()} ({first_line(error.message)}); the model owner's weights are unchanged"
            ) from None
        except FLError as error:
            raise RoundFailedError(f"round {index} refused: {error}; the model owner's weights are unchanged") from None

    def _run(self, index: int) -> RoundResult:
        started = time.perf_counter()
        owners = list(self.trainers)
        with tf.device(self.model_owner.device_name):
            global_weights = [tf.identity(variable) for variable in self.model.weights]
        updates, training_seconds = self._train(global_weights, self.seed * 100_003 + index)
        trained = time.perf_counter()
        if self._aggregate_and_apply is None:
            self._aggregate_and_apply = compiled(
                self._aggregation_stage, *(tf.TensorSpec([self.update_size], tf.float32) for _ in owners)
            )
        called = time.time()
        report = Report.unpack(call_on_driver(self._aggregate_and_apply, *(updates[o] for o in owners)), owners)
        returned = time.time()
        values = self.update_size - self.metric_count
        if not report.accepted:
            raise RangeError(self.aggregation.refusal(report.clipped, report.finite, values))
        if not report.applied:
            raise FLError("the averaged update made the weights non-finite; lower the learning rate")
        ends = [called, *(report.stage_ends[stage] for stage in STAGES), returned]
        phases = {"local_training": trained - started}
        phases |= {phase: max(end - begin, 0.0) for phase, begin, end in zip([*STAGES, "model_update"], ends, ends[1:])}
        return RoundResult(
            index=index,
            metrics=dict(zip(self.spec.metric_names, map(float, report.values))),
            seconds=time.perf_counter() - started,
            phase_seconds=phases,
            clipped=report.clipped,
            expected_bytes=self.aggregation.expected_bytes(owners, self.update_size),
            owner_training_seconds=training_seconds,
        )

    def _train(self, global_weights: list[tf.Tensor], round_seed: int) -> tuple[dict[Player, tf.Tensor], dict[str, float]]:
        """Every owner's local training at once, one thread each (TF runs them without the GIL)."""

        def train(trainer: OwnerTrainer) -> tuple[tf.Tensor, float]:
            began = time.perf_counter()
            update = trainer.update(global_weights, round_seed)
            return update, time.perf_counter() - began

        with ThreadPoolExecutor(len(self.trainers)) as pool:
            done = dict(zip(self.trainers, pool.map(train, self.trainers.values())))
        return {owner: update for owner, (update, _) in done.items()}, {o.name: s for o, (_, s) in done.items()}

    def _aggregation_stage(self, *updates: tf.Tensor) -> tf.Tensor:
        """Traced once: average, then the gated model update; the report waits for every assignment."""
        owners = list(self.trainers)
        averaged = self.aggregation.average(dict(zip(owners, updates)), self.metric_count)
        with tf.device(self.model_owner.device_name):
            parts = tf.split(averaged.mean, [*self.sizes, self.metric_count])
            olds = [variable.read_value() for variable in self.model.weights]
            news = [old + self.server_learning_rate * tf.reshape(delta, old.shape) for old, delta in zip(olds, parts[:-1])]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(new)) for new in news])
            applied = averaged.accepted & finite
            assignments = [
                variable.assign(tf.where(applied, new, old)) for variable, new, old in zip(self.model.weights, news, olds)
            ]
            with tf.control_dependencies(assignments):
                return Report.pack(averaged, owners, applied, [parts[-1]])

    def _culprits(self) -> str:
        """Who does not answer now, asked of every player rather than guessed from TF's message."""
        silent = unreachable(self.players)
        if silent:
            return "not answering: " + ", ".join(player.name for player in silent)
        return "every player answers a status probe"
