"""One federated round, orchestrated by the driver in two compiled stages.

1. Training: the model owner's weights go to every data owner, and each owner
   trains its replica locally. Remote calls return at once, so the owners'
   transfers and training overlap.
2. Aggregation: one compiled call runs range check, sharing, secure sum, reveal and
   division (fl/aggregation/base.py), then the model update on the model owner,
   which assigns the new weights only if the round was accepted and they are
   finite. A round that fails or is refused anywhere leaves the weights exactly as
   they were; the driver reads back one small report vector.

Every round has a deadline (`round_timeout`): the driver waits for the round on its
own thread until then, probing the players every few seconds, so a dead or hung player
fails the round early, by name. The model owner applies the average only while its own
clock is before the deadline, so a call still pending when the driver gives up can
never change the model later. When a round fails, every player is probed at once and
those that do not answer are named.

The graphs are built with `tf.compat.v1.wrap_function`, once per runner, never per
round: functions registered on remote workers are never released, so tracing each
round would grow the players' memory. Not `tf.function`: its automatic control
dependencies add a node on the caller, the driver, which the players cannot reach
on the mesh. Each graph has one output, on a player, which waits for every
stateful op.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from fl.aggregation.base import Aggregation, Averaged
from fl.cluster import Cluster, Player, require_reachable, unreachable
from fl.errors import DeadlineExceededError, FLError, RangeError, RoundFailedError, first_line
from fl.local_training import OwnerTrainer, TrainingSpec
from fl.phases import DEFAULT_ROUND_TIMEOUT, STAGES

# the driver's own device: a compiled call is issued from here, its ops run on the players
DRIVER_DEVICE = "/job:localhost/replica:0/task:0/device:CPU:0"
# the driver waits this much past a deadline for a call that the model owner's clock may still accept
CLOCK_MARGIN = 1.0
# while a round runs longer than this, its players are probed this often
PROBE_INTERVAL = 2.0


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

    accepted: bool
    flags: dict[str, bool]
    clipped: dict[str, int]
    finite: dict[str, bool]
    values: np.ndarray
    stage_ends: dict[str, float]

    @staticmethod
    def pack(averaged: Averaged, owners: Sequence[Player], flags: Sequence[tf.Tensor], values: Sequence[tf.Tensor]) -> tf.Tensor:
        """On the output receiver: acceptance, the caller's `flags`, per-owner checks, `values`, each stage's end."""
        head = [averaged.accepted, *flags, *(averaged.finite[owner] for owner in owners)]
        head = [tf.cast(flag, tf.float64) for flag in head]
        head += [tf.cast(averaged.clipped[owner], tf.float64) for owner in owners]
        stamps = [averaged.stage_ends[stage] for stage in STAGES]
        return tf.concat([tf.stack(head), *(tf.cast(v, tf.float64) for v in values), tf.stack(stamps)], axis=0)

    @classmethod
    def unpack(cls, vector: np.ndarray, owners: Sequence[Player], flag_names: Sequence[str] = ()) -> Report:
        names = [owner.name for owner in owners]
        flags, finite_at = 1 + len(flag_names), 1 + len(flag_names) + len(names)
        return cls(
            accepted=bool(vector[0]),
            flags={name: bool(v) for name, v in zip(flag_names, vector[1:flags])},
            finite={name: bool(v) for name, v in zip(names, vector[flags:finite_at])},
            clipped={name: int(v) for name, v in zip(names, vector[finite_at : finite_at + len(names)])},
            values=vector[finite_at + len(names) : -len(STAGES)],
            stage_ends=dict(zip(STAGES, map(float, vector[-len(STAGES) :]))),
        )


# what a round's report says besides the aggregation's own checks
OUTCOME_FLAGS = ("weights_finite", "in_time")


class BackgroundCall:
    """A call on its own daemon thread, awaited with a deadline: a hung player must not hang the driver."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self._outcome: tuple[Any, BaseException | None] | None = None
        self._thread = threading.Thread(target=self._run, args=(function, args), daemon=True)
        self._thread.start()

    def _run(self, function: Callable[..., Any], args: tuple) -> None:
        try:
            self._outcome = (function(*args), None)
        except BaseException as error:  # handed to the waiting thread
            self._outcome = (None, error)

    def wait(self, seconds: float | None = None) -> bool:
        """Whether the call ended within `seconds` (None: however long it takes)."""
        self._thread.join(None if seconds is None else max(seconds, 0.0))
        return not self._thread.is_alive()

    def result(self) -> Any:
        value, error = self._outcome
        if error is not None:
            raise error
        return value


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
                    return Report.pack(averaged, self.owners, [], [])

        self._call = compiled(average, *(tf.TensorSpec([size], tf.float32) for _ in self.owners))

    def __call__(self, updates: Mapping[Player, tf.Tensor]) -> Report:
        return Report.unpack(call_on_driver(self._call, *(updates[owner] for owner in self.owners)), self.owners)

    def refusal(self, report: Report) -> str | None:
        return self.aggregation.refusal(report.clipped, report.finite, self.values)


class RoundRunner:
    """Runs rounds over `trainers`: each owner's replica, made in its first round's thread, so a hung owner costs the deadline."""

    def __init__(
        self,
        cluster: Cluster,
        model: tf.keras.Model,
        aggregation: Aggregation,
        trainers: Mapping[Player, Callable[[], OwnerTrainer]],
        spec: TrainingSpec,
        server_learning_rate: float,
        seed: int,
        round_timeout: float = DEFAULT_ROUND_TIMEOUT,
    ) -> None:
        if not round_timeout > 0:
            raise FLError(f"round_timeout must be > 0 seconds, got {round_timeout:g}")
        self.cluster = cluster
        self.model = model
        self.model_owner = cluster.model_owner
        self.aggregation = aggregation
        self.trainers = dict(trainers)
        self.spec = spec
        self.server_learning_rate = server_learning_rate
        self.seed = seed
        self.round_timeout = round_timeout
        self.sizes = [int(np.prod(v.shape)) for v in model.weights]
        self._replicas: dict[Player, OwnerTrainer] = {}
        self._late_rounds: list[BackgroundCall] = []  # rounds the driver gave up on
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
        deadline = time.time() + self.round_timeout
        call = BackgroundCall(self._run, index, deadline)
        try:
            self._await(call, deadline)
            return call.result()
        except tf.errors.OpError as error:
            failure = f"{self._culprits()} ({first_line(error.message)})"
        except DeadlineExceededError as error:
            failure = str(error)
        except FLError as error:
            raise RoundFailedError(f"round {index} refused: {error}; the model owner's weights are unchanged") from None
        raise RoundFailedError(f"round {index} failed: {failure}; the model owner's weights are unchanged")

    def _await(self, call: BackgroundCall, deadline: float) -> None:
        """Until the deadline, probing every player each PROBE_INTERVAL: a dead or hung player fails the round early.

        TF does not cancel a remote component function when another component's player dies, so
        without the probes a killed player would cost the whole deadline.
        """
        while not call.wait(min(PROBE_INTERVAL, deadline + CLOCK_MARGIN - time.time())):
            silent = unreachable(self.players)
            if silent or time.time() >= deadline + CLOCK_MARGIN:
                self._late_rounds.append(call)
                if silent:
                    raise DeadlineExceededError("not answering: " + ", ".join(player.name for player in silent))
                raise DeadlineExceededError(f"no result within its {self.round_timeout:g} s deadline; {self._culprits()}")

    def settle(self, seconds: float) -> None:
        """Give the calls of rounds that missed their deadline up to `seconds` to end, e.g. before reconnecting."""
        until = time.time() + seconds
        self._late_rounds = [call for call in self._late_rounds if not call.wait(until - time.time())]

    def _run(self, index: int, deadline: float) -> RoundResult:
        """The round's calls; remote calls return at once, so the owners train at the same time."""
        started = time.time()
        owners = list(self.trainers)
        with tf.device(self.model_owner.device_name):
            global_weights = [tf.identity(variable) for variable in self.model.weights]
            self._deadline.assign(deadline)
        round_seed = self.seed * 100_003 + index
        updates = [self._replica(owner).update(global_weights, round_seed) for owner in owners]
        if self._aggregate_and_apply is None:
            inputs = [tf.TensorSpec([self.update_size], tf.float32) for _ in owners]
            self._aggregate_and_apply = compiled(self._aggregation_stage, *inputs)
        report = Report.unpack(call_on_driver(self._aggregate_and_apply, *updates), owners, OUTCOME_FLAGS)
        returned = time.time()
        values = self.update_size - self.metric_count
        if not report.accepted:
            raise RangeError(self.aggregation.refusal(report.clipped, report.finite, values))
        if not report.flags["weights_finite"]:
            raise FLError("the averaged update made the weights non-finite; lower the learning rate")
        if not report.flags["in_time"]:
            raise FLError(f"the average reached the model owner after the round's {self.round_timeout:g} s deadline")
        metrics, updated_at = report.values[: self.metric_count], report.values[self.metric_count :]
        trained = float(max(updated_at))
        ends = [trained, *(report.stage_ends[stage] for stage in STAGES), returned]
        phases = {"local_training": max(trained - started, 0.0)}
        phases |= {phase: max(end - begin, 0.0) for phase, begin, end in zip([*STAGES, "model_update"], ends, ends[1:])}
        return RoundResult(
            index=index,
            metrics=dict(zip(self.spec.metric_names, map(float, metrics))),
            seconds=returned - started,
            phase_seconds=phases,
            clipped=report.clipped,
            expected_bytes=self.aggregation.expected_bytes(owners, self.update_size),
            owner_training_seconds={o.name: max(float(at) - started, 0.0) for o, at in zip(owners, updated_at)},
        )

    def _replica(self, owner: Player) -> OwnerTrainer:
        if owner not in self._replicas:
            self._replicas[owner] = self.trainers[owner]()
        return self._replicas[owner]

    @functools.cached_property
    def _deadline(self) -> tf.Variable:
        """The round's deadline, on the model owner: its own clock decides whether an average is still in time."""
        with tf.device(self.model_owner.device_name):
            return tf.Variable(0.0, dtype=tf.float64, trainable=False)

    def _aggregation_stage(self, *updates: tf.Tensor) -> tf.Tensor:
        """Traced once: average, then add the update on the model owner if accepted, finite and in time.

        Adding zero when not applied (rather than assigning the old value) keeps a late call from
        undoing a later round. Each owner's clock stamps when its update was ready: its training's end.
        """
        owners = list(self.trainers)
        updated_at = []
        for owner, update in zip(owners, updates):
            with tf.device(owner.device_name), tf.control_dependencies([update]):
                updated_at.append(tf.timestamp())
        averaged = self.aggregation.average(dict(zip(owners, updates)), self.metric_count)
        with tf.device(self.model_owner.device_name):
            parts = tf.split(averaged.mean, [*self.sizes, self.metric_count])
            steps = [self.server_learning_rate * tf.reshape(delta, v.shape) for v, delta in zip(self.model.weights, parts)]
            weights_finite = tf.reduce_all(
                [tf.reduce_all(tf.math.is_finite(v.read_value() + step)) for v, step in zip(self.model.weights, steps)]
            )
            in_time = tf.timestamp() < self._deadline.read_value()
            applied = averaged.accepted & weights_finite & in_time
            additions = [v.assign_add(tf.where(applied, step, tf.zeros_like(step))) for v, step in zip(self.model.weights, steps)]
            with tf.control_dependencies(additions):
                return Report.pack(averaged, owners, [weights_finite, in_time], [parts[-1], tf.stack(updated_at)])

    def _culprits(self) -> str:
        """Who does not answer now, asked of every player rather than guessed from TF's message."""
        silent = unreachable(self.players)
        if silent:
            return "not answering: " + ", ".join(player.name for player in silent)
        return "every player answers a status probe"
