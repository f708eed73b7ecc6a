"""One federated round, orchestrated by the driver in two compiled stages.

1. Training: each data owner runs one compiled call that reads the model owner's
   weights, trains its replica locally and keeps the update in a variable on the
   owner, returning only its clock's stamp. The calls run at once, one driver thread
   each, so the owners' transfers and training overlap.
2. Aggregation: one compiled call reads the updates where they are kept and runs
   range check, sharing, secure sum, reveal and division (fl/aggregation/base.py),
   then the model update on the model owner, which adds the average only if the
   round was accepted and the weights stay finite. A round that fails or is refused
   anywhere leaves the weights exactly as they were; the driver reads back one small
   report vector.

Every round has a deadline (`round_timeout`), and its first half is the local-training
deadline. With a quorum (`min_owners` below the number of owners), owners that have not
delivered by then (hung, dead, slow) are left out of the round and named, and the others
are averaged; sharing starts only after that, so nobody is lost mid-protocol for being
slow. Without one, such an owner fails the round. While it waits, the driver probes the
players every few seconds, so a dead or hung player is found early, by name. The model
owner applies the average only while its own clock is before the deadline, so a call still
pending when the driver gives up can never change the model later. An owner still busy
with an earlier round's call sits out until that call ends.

The graphs are built with `tf.compat.v1.wrap_function`, once per runner (and per set of
delivering owners), never per round: functions registered on remote workers are never
released, so tracing each round would grow the players' memory. Not `tf.function`: its
automatic control dependencies add a node on the caller, the driver, which the players
cannot reach on the mesh. Each graph has one output, on a player, which waits for every
stateful op. The driver only ever reads those outputs (`.numpy()`, which lets other threads
run while it waits): touching a hung owner's pending tensors otherwise can block the
whole driver.
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
from fl.cluster import MIN_DATA_OWNERS, Cluster, Player, unreachable
from fl.errors import DeadlineExceededError, FLError, RangeError, RoundFailedError, first_line
from fl.local_training import OwnerTrainer, TrainingSpec
from fl.phases import DEFAULT_ROUND_TIMEOUT, STAGES

# the driver's own device: a compiled call is issued from here, its ops run on the players
DRIVER_DEVICE = "/job:localhost/replica:0/task:0/device:CPU:0"
# the driver waits this much past a deadline for a call that the model owner's clock may still accept
CLOCK_MARGIN = 1.0
# while a round runs longer than this, its players are probed this often
PROBE_INTERVAL = 2.0
# owners deliver their updates within this share of a round's deadline (the local-training deadline)
TRAINING_SHARE = 0.5


@dataclass
class RoundResult:
    index: int
    metrics: dict[str, float]
    seconds: float
    phase_seconds: dict[str, float] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)
    expected_bytes: dict[str, int] = field(default_factory=dict)
    owner_training_seconds: dict[str, float] = field(default_factory=dict)
    participants: list[str] = field(default_factory=list)  # the owners whose updates were averaged
    dropped: dict[str, str] = field(default_factory=dict)  # owners left out of the round, with the reason


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

    def __init__(self, function: Callable[..., Any], *args: Any, finished: threading.Event | None = None) -> None:
        """`finished` is set when the call ends, so one thread can wait for the first of several calls."""
        self._outcome: tuple[Any, BaseException | None] | None = None
        self._finished = finished
        self._thread = threading.Thread(target=self._run, args=(function, args), daemon=True)
        self._thread.start()

    def _run(self, function: Callable[..., Any], args: tuple) -> None:
        try:
            self._outcome = (function(*args), None)
        except BaseException as error:  # handed to the waiting thread
            self._outcome = (None, error)
        if self._finished is not None:
            self._finished.set()

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


def quorum(min_owners: int | None, owners: int) -> int:
    """The fewest owners a round may average: `min_owners`, checked, or every owner."""
    if min_owners is None:
        return owners
    if not MIN_DATA_OWNERS <= min_owners <= owners:
        raise FLError(
            f"--min-owners {min_owners}: a round averages at least {MIN_DATA_OWNERS} owners and at most "
            f"the {owners} training; pass a number in between"
        )
    return min_owners


class RoundRunner:
    """Runs rounds over `trainers`: each owner's replica and compiled training call are made in its first round's
    thread, so a hung owner costs the deadline, not the driver."""

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
        min_owners: int | None = None,
    ) -> None:
        """`min_owners`: the quorum, the fewest owners whose updates a round averages (default: every owner)."""
        if not round_timeout > 0:
            raise FLError(f"round_timeout must be > 0 seconds, got {round_timeout:g}")
        min_owners = quorum(min_owners, len(trainers))
        self.cluster = cluster
        self.model = model
        self.model_owner = cluster.model_owner
        self.aggregation = aggregation
        self.trainers = dict(trainers)
        self.spec = spec
        self.server_learning_rate = server_learning_rate
        self.seed = seed
        self.round_timeout = round_timeout
        self.min_owners = min_owners
        self.sizes = [int(np.prod(v.shape)) for v in model.weights]
        self._building = threading.Lock()  # replicas and traces are made one at a time, in the owners' threads
        self._training_calls: dict[Player, Callable[..., tf.Tensor]] = {}
        self._updates: dict[Player, tf.Variable] = {}  # each owner's latest update, kept on the owner
        self._replicas: dict[Player, OwnerTrainer] = {}
        self._busy: dict[Player, BackgroundCall] = {}  # training calls that missed their deadline, still running
        self._late_rounds: list[BackgroundCall] = []  # aggregation calls the driver gave up on
        self._aggregation_stages: dict[tuple[Player, ...], Callable[..., tf.Tensor]] = {}

    @property
    def players(self) -> list[Player]:
        """Everyone a round can involve: the model owner, the training owners, the aggregation's players."""
        return list(dict.fromkeys([self.model_owner, *self.trainers, *self.aggregation.players]))

    @property
    def metric_count(self) -> int:
        return len(self.spec.metric_names)

    @property
    def update_size(self) -> int:
        return sum(self.sizes) + self.metric_count

    @property
    def training_timeout(self) -> float:
        """Owners deliver their updates within this share of the round's deadline; the rest is aggregation's."""
        return self.round_timeout * TRAINING_SHARE

    def run(self, index: int) -> RoundResult:
        started = time.time()
        deadline = started + self.round_timeout
        involved = self.players  # until the owners left out are known
        try:
            stamps, dropped = self._train(index, started)
            delivered = list(stamps)
            aggregation = self.aggregation.for_owners(delivered)
            involved = list(dict.fromkeys([self.model_owner, *delivered, *aggregation.players]))
            stage = self._aggregation_stage(tuple(delivered), aggregation)
            call = BackgroundCall(self._aggregate, stage, deadline)
            self._await(call, deadline, involved)
            return self._result(
                index, started, Report.unpack(call.result(), delivered, OUTCOME_FLAGS), aggregation, stamps, dropped
            )
        except tf.errors.OpError as error:
            failure = f"{self._culprits(involved)} ({first_line(error.message)})"
        except DeadlineExceededError as error:
            failure = str(error)
        except FLError as error:
            raise RoundFailedError(f"round {index} refused: {error}; the model owner's weights are unchanged") from None
        raise RoundFailedError(f"round {index} failed: {failure}; the model owner's weights are unchanged")

    def _train(self, index: int, started: float) -> tuple[dict[Player, float], dict[str, str]]:
        """Stage 1: every available owner trains; returns when each has delivered, been dropped, or the
        local-training deadline passed. Owners left out are named with the reason; fewer than the quorum fail the round.
        """
        training_deadline = started + self.training_timeout
        dropped: dict[str, str] = {}
        for owner, call in list(self._busy.items()):
            if call.wait(0):
                del self._busy[owner]
            else:
                dropped[owner.name] = "still training an earlier round"
        silent = unreachable([player for player in self.players if player not in self._busy])
        self._require_answering(silent)
        dropped |= {owner.name: "not answering" for owner in silent}
        finished = threading.Event()
        round_seed = self.seed * 100_003 + index
        with tf.device(self.model_owner.device_name):  # this round's weights, a data dependency of every owner's call
            global_weights = [tf.identity(variable) for variable in self.model.weights]
        calls = {
            owner: BackgroundCall(self._deliver, owner, global_weights, round_seed, finished=finished)
            for owner in self.trainers
            if owner.name not in dropped
        }
        stamps: dict[Player, float] = {}
        next_probe = time.time() + PROBE_INTERVAL
        try:
            while calls and time.time() < training_deadline and len(stamps) + len(calls) >= self.min_owners:
                finished.wait(max(min(next_probe, training_deadline) - time.time(), 0.0))
                finished.clear()
                for owner, call in list(calls.items()):
                    if call.wait(0):
                        del calls[owner]
                        try:
                            stamps[owner] = float(call.result())
                        except tf.errors.OpError as error:
                            dropped[owner.name] = f"failed ({first_line(error.message)})"
                if time.time() >= next_probe and calls:
                    silent = unreachable([*calls, *(p for p in self.players if p not in self.trainers)])
                    self._require_answering(silent)
                    for owner in silent:
                        self._busy[owner] = calls.pop(owner)
                        dropped[owner.name] = "not answering"
                    next_probe = time.time() + PROBE_INTERVAL
        finally:  # an owner's call still running keeps it out of later rounds until it ends
            late = time.time() >= training_deadline
            for owner, call in calls.items():
                self._busy[owner] = call
                if late:
                    dropped.setdefault(owner.name, f"no update within the {self.training_timeout:g} s local-training deadline")
        if len(stamps) < self.min_owners:
            reasons: dict[str, list[str]] = {}
            for name, reason in dropped.items():
                reasons.setdefault(reason, []).append(name)
            failure = "; ".join(f"{reason}: {', '.join(names)}" for reason, names in reasons.items())
            if self.min_owners < len(self.trainers):
                failure = f"{len(stamps)} of {len(self.trainers)} owners delivered, the quorum is {self.min_owners}; {failure}"
            raise DeadlineExceededError(failure)
        ordered = [owner for owner in self.trainers if owner in stamps]  # the traced stage's order, whoever finished first
        return {owner: stamps[owner] for owner in ordered}, dropped

    def _require_answering(self, silent: list[Player]) -> None:
        """A silent player that is not a data owner (the model owner, a compute server) fails the round."""
        needed = [player.name for player in silent if player not in self.trainers]
        if needed:
            raise DeadlineExceededError("not answering: " + ", ".join(needed))

    def _deliver(self, owner: Player, global_weights: list[tf.Tensor], round_seed: int) -> float:
        """On the owner's thread: train from `global_weights`, keep the update on the owner, return when.

        Every input of a compiled call is made where it is used, by an eager op: a compiled call is not
        ordered after the eager ops issued before it, only after its inputs, and an input left on the driver
        would have the player fetch it from the driver, which no player may reach on the mesh.
        """
        with self._building:
            fresh = owner not in self._training_calls
            if fresh:
                self._training_calls[owner] = self._compile_training(owner)
        if fresh:  # the replica's and optimizer's variables are initialised by eager ops: wait for them once
            state = [*self._replicas[owner].replica.weights, *self._replicas[owner].optimizer.variables, self._updates[owner]]
            with tf.device(owner.device_name):
                tf.add_n([tf.reduce_sum(tf.cast(variable, tf.float64)) for variable in state]).numpy()
        with tf.device(owner.device_name):
            seed = tf.identity(tf.constant(round_seed, tf.int64))
        return float(call_on_driver(self._training_calls[owner], *global_weights, seed))

    def _compile_training(self, owner: Player) -> Callable[..., tf.Tensor]:
        trainer = self._replicas[owner] = self.trainers[owner]()
        with tf.device(owner.device_name):
            self._updates[owner] = tf.Variable(tf.zeros([self.update_size]), trainable=False)

        def train(*inputs: tf.Tensor) -> tf.Tensor:
            update = trainer.update(list(inputs[:-1]), inputs[-1])
            with tf.device(owner.device_name):
                kept = self._updates[owner].assign(update)
                with tf.control_dependencies([kept]):
                    return tf.timestamp()

        weights = [tf.TensorSpec(variable.shape, variable.dtype) for variable in self.model.weights]
        return compiled(train, *weights, tf.TensorSpec([], tf.int64))

    def _await(self, call: BackgroundCall, deadline: float, players: list[Player]) -> None:
        """Until the deadline, probing `players` each PROBE_INTERVAL: a dead or hung player fails the round early.

        TF does not cancel a remote component function when another component's player dies, so
        without the probes a killed player would cost the whole deadline.
        """
        players = list(dict.fromkeys(players))
        while not call.wait(min(PROBE_INTERVAL, deadline + CLOCK_MARGIN - time.time())):
            silent = unreachable(players)
            if silent or time.time() >= deadline + CLOCK_MARGIN:
                self._late_rounds.append(call)
                if silent:
                    raise DeadlineExceededError(_named(silent))
                raise DeadlineExceededError(f"no result within its {self.round_timeout:g} s deadline; {_named(silent)}")

    def settle(self, seconds: float) -> None:
        """Give the calls that missed their deadline up to `seconds` to end, e.g. before reconnecting."""
        until = time.time() + seconds
        self._late_rounds = [call for call in self._late_rounds if not call.wait(until - time.time())]
        self._busy = {owner: call for owner, call in self._busy.items() if not call.wait(until - time.time())}

    def _result(
        self,
        index: int,
        started: float,
        report: Report,
        aggregation: Aggregation,
        stamps: dict[Player, float],
        dropped: dict[str, str],
    ) -> RoundResult:
        returned = time.time()
        values = self.update_size - self.metric_count
        if not report.accepted:
            raise RangeError(aggregation.refusal(report.clipped, report.finite, values))
        if not report.flags["weights_finite"]:
            raise FLError("the averaged update made the weights non-finite; lower the learning rate")
        if not report.flags["in_time"]:
            raise FLError(f"the average reached the model owner after the round's {self.round_timeout:g} s deadline")
        trained = max(stamps.values())
        ends = [trained, *(report.stage_ends[stage] for stage in STAGES), returned]
        phases = {"local_training": max(trained - started, 0.0)}
        phases |= {phase: max(end - begin, 0.0) for phase, begin, end in zip([*STAGES, "model_update"], ends, ends[1:])}
        return RoundResult(
            index=index,
            metrics=dict(zip(self.spec.metric_names, map(float, report.values))),
            seconds=returned - started,
            phase_seconds=phases,
            clipped=report.clipped,
            expected_bytes=aggregation.expected_bytes(list(stamps), self.update_size),
            owner_training_seconds={owner.name: max(at - started, 0.0) for owner, at in stamps.items()},
            participants=[owner.name for owner in stamps],
            dropped=dropped,
        )

    def _aggregate(self, stage: Callable[..., tf.Tensor], deadline: float) -> np.ndarray:
        """The round's deadline goes to the model owner, whose own clock decides whether the average is in time."""
        with tf.device(self.model_owner.device_name):
            deadline_there = tf.identity(tf.constant(deadline, tf.float64))
        return call_on_driver(stage, deadline_there)

    def _aggregation_stage(self, owners: tuple[Player, ...], aggregation: Aggregation) -> Callable[..., tf.Tensor]:
        """Traced once per set of delivering owners (all of them, unless some were left out)."""
        if owners not in self._aggregation_stages:
            stage = functools.partial(self._aggregate_and_apply, owners, aggregation)
            self._aggregation_stages[owners] = compiled(stage, tf.TensorSpec([], tf.float64))
        return self._aggregation_stages[owners]

    def _aggregate_and_apply(self, owners: tuple[Player, ...], aggregation: Aggregation, deadline: tf.Tensor) -> tf.Tensor:
        """Average the updates kept on `owners`, then add the average on the model owner if accepted, finite and
        before `deadline` by the model owner's own clock.

        Adding zero when not applied (rather than assigning the old value) keeps a late call from
        undoing a later round.
        """
        updates = {}
        for owner in owners:
            with tf.device(owner.device_name):
                updates[owner] = self._updates[owner].read_value()
        averaged = aggregation.average(updates, self.metric_count)
        with tf.device(self.model_owner.device_name):
            parts = tf.split(averaged.mean, [*self.sizes, self.metric_count])
            steps = [self.server_learning_rate * tf.reshape(delta, v.shape) for v, delta in zip(self.model.weights, parts)]
            weights_finite = tf.reduce_all(
                [tf.reduce_all(tf.math.is_finite(v.read_value() + step)) for v, step in zip(self.model.weights, steps)]
            )
            in_time = tf.timestamp() < deadline
            applied = averaged.accepted & weights_finite & in_time
            additions = [v.assign_add(tf.where(applied, step, tf.zeros_like(step))) for v, step in zip(self.model.weights, steps)]
            with tf.control_dependencies(additions):
                return Report.pack(averaged, list(owners), [weights_finite, in_time], [parts[-1]])

    def _culprits(self, players: list[Player]) -> str:
        """Who of the round's `players` does not answer now, asked of each rather than guessed from TF's message
        (an owner already left out of the round is not one of them)."""
        return _named(unreachable(players))


def _named(silent: list[Player]) -> str:
    """What a status probe of a round's players found."""
    if silent:
        return "not answering: " + ", ".join(player.name for player in silent)
    return "every player of the round answers a status probe"
