"""When and with whom a round runs: the driver's schedule around the compiled stages (fl/rounds/stages.py).

Owners train at once, one driver thread each, so their transfers and training overlap;
then one aggregation call averages and applies. Every round has a deadline
(`RoundPolicy.round_timeout`), and its first half is the local-training deadline. With a
quorum (`min_owners` below the number of owners), owners that have not delivered by then
(hung, dead, slow) are left out of the round and named, and the others are averaged;
sharing starts only after that, so nobody is lost mid-protocol for being slow. Without
one, such an owner fails the round. While it waits, the driver probes the players every
few seconds, so a dead or hung player is found early, by name. The model owner applies the
average only while its own clock is before the deadline, so a call still pending when the
driver gives up can never change the model later. An owner still busy with an earlier
round's call sits out until that call ends.

The driver only ever reads the compiled calls' outputs (`.numpy()`, which lets other
threads run while it waits): touching a hung owner's pending tensors otherwise can block
the whole driver.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from fl import privacy as dp
from fl.aggregation.base import WEIGHT_SLOTS, Aggregation
from fl.cluster import MIN_DATA_OWNERS, Cluster, Player, unreachable
from fl.errors import DeadlineExceededError, FLError, RangeError, RoundFailedError, first_line
from fl.local_training import OwnerTrainer, TrainingSpec
from fl.phases import STAGES
from fl.policies import DifferentialPrivacy, RoundPolicy, Weighting
from fl.rounds.stages import OUTCOME_FLAGS, Report, aggregation_stage, call_on_driver, training_stage
from fl.server_update import ServerUpdate

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
    norm_clipped: list[str] = field(default_factory=list)  # distributed DP: owners whose update was clipped to the norm


class RoundListener(Protocol):
    """Told of every round's outcome, e.g. to export metrics."""

    def round_completed(self, result: RoundResult) -> None: ...

    def round_failed(self, index: int, error: FLError) -> None: ...


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
        server_update: ServerUpdate,
        seed: int,
        policy: RoundPolicy = RoundPolicy(),
        weighting: Weighting = Weighting(),
        privacy: DifferentialPrivacy | None = None,
    ) -> None:
        """`policy.min_owners`: the quorum, the fewest owners whose updates a round averages (default: every owner).

        `privacy` is calibrated here, for the model's size, the owners, the quorum and the aggregation's encoding.
        """
        self.min_owners = quorum(policy.min_owners, len(trainers))
        self.cluster = cluster
        self.model = model
        self.model_owner = cluster.model_owner
        self.aggregation = aggregation
        self.trainers = dict(trainers)
        self.spec = spec
        self.server_update = server_update
        self.seed = seed
        self.round_timeout = policy.round_timeout
        self.weighting = weighting
        self.sizes = [int(np.prod(v.shape)) for v in model.weights]
        self.privacy = (
            None if privacy is None else dp.calibrate(privacy, aggregation, sum(self.sizes), len(self.trainers), self.min_owners)
        )
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
        """An owner's update as it is averaged: deltas and metrics (its example count rides after them)."""
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

        A failed call is blamed on no one before the players are probed: when one player dies, another owner's call
        can fail with it. An owner that answers while another is silent gets one more try within the deadline.
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
        retried: set[Player] = set()
        next_probe = time.time() + PROBE_INTERVAL
        try:
            while calls and time.time() < training_deadline and len(stamps) + len(calls) >= self.min_owners:
                finished.wait(max(min(next_probe, training_deadline) - time.time(), 0.0))
                finished.clear()
                failed: dict[Player, str] = {}
                for owner, call in list(calls.items()):
                    if call.wait(0):
                        del calls[owner]
                        try:
                            stamps[owner] = float(call.result())
                        except tf.errors.OpError as error:
                            failed[owner] = first_line(error.message)
                if failed or (time.time() >= next_probe and calls):
                    silent = unreachable([*calls, *failed, *(p for p in self.players if p not in self.trainers)])
                    self._require_answering(silent)
                    for owner in silent:
                        if owner in calls:
                            self._busy[owner] = calls.pop(owner)
                        dropped[owner.name] = "not answering"
                    for owner, message in failed.items():
                        if owner in silent:
                            continue
                        if silent and owner not in retried:  # its call may have broken with a dead peer's link
                            retried.add(owner)
                            calls[owner] = BackgroundCall(self._deliver, owner, global_weights, round_seed, finished=finished)
                        else:
                            dropped[owner.name] = f"failed ({message})"
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
        """A silent player that is not a data owner (the model owner, a compute server) fails the round, which
        names every silent player (a host that went down takes all of its players with it)."""
        if any(player not in self.trainers for player in silent):
            raise DeadlineExceededError(_named(silent))

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
            self._updates[owner] = tf.Variable(tf.zeros([self.update_size + WEIGHT_SLOTS]), trainable=False)
        return training_stage(trainer, self._updates[owner], self.model.weights)

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
            raise RangeError(report.refusal(aggregation, values))
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
            expected_bytes=aggregation.expected_bytes(list(stamps), self.update_size + WEIGHT_SLOTS),
            owner_training_seconds={owner.name: max(at - started, 0.0) for owner, at in stamps.items()},
            participants=[owner.name for owner in stamps],
            dropped=dropped,
            norm_clipped=[owner for owner, clipped in report.norm_clipped.items() if clipped],
        )

    def _aggregate(self, stage: Callable[..., tf.Tensor], deadline: float) -> np.ndarray:
        """The round's deadline goes to the model owner, whose own clock decides whether the average is in time."""
        with tf.device(self.model_owner.device_name):
            deadline_there = tf.identity(tf.constant(deadline, tf.float64))
        return call_on_driver(stage, deadline_there)

    def _aggregation_stage(self, owners: tuple[Player, ...], aggregation: Aggregation) -> Callable[..., tf.Tensor]:
        """Traced once per set of delivering owners (all of them, unless some were left out)."""
        if owners not in self._aggregation_stages:
            kept = {owner: self._updates[owner] for owner in owners}
            self._aggregation_stages[owners] = aggregation_stage(
                kept, aggregation, self.weighting, self.server_update, self.model_owner, self.metric_count, self.privacy
            )
        return self._aggregation_stages[owners]

    def _culprits(self, players: list[Player]) -> str:
        """Who of the round's `players` does not answer now, asked of each rather than guessed from TF's message
        (an owner already left out of the round is not one of them)."""
        return _named(unreachable(players))


def _named(silent: list[Player]) -> str:
    """What a status probe of a round's players found."""
    if silent:
        return "not answering: " + ", ".join(player.name for player in silent)
    return "every player of the round answers a status probe"
