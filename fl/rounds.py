"""One federated round, orchestrated by the driver.

broadcast the model owner's weights -> each data owner trains locally ->
the aggregation averages the deltas (and training metrics) -> the model owner
applies the average. The new weights are computed in full and checked before a
single variable is assigned, so a round that fails anywhere leaves the model
owner's weights exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import tensorflow as tf

from fl.aggregation.base import Aggregation
from fl.cluster import Cluster, Player, require_reachable, unreachable
from fl.errors import FLError, RoundFailedError, first_line
from fl.local_training import OwnerTrainer, TrainingSpec
from fl.phases import PhaseClock


@dataclass
class RoundResult:
    index: int
    metrics: dict[str, float]
    seconds: float
    phase_seconds: dict[str, float] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)
    expected_bytes: dict[str, int] = field(default_factory=dict)


class RoundListener(Protocol):
    """Told of every round's outcome, e.g. to export metrics."""

    def round_completed(self, result: RoundResult) -> None: ...

    def round_failed(self, index: int, error: FLError) -> None: ...


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

    @property
    def players(self) -> list[Player]:
        """Everyone a round needs: the model owner, the training owners, the aggregation's players."""
        return list(dict.fromkeys([self.model_owner, *self.trainers, *self.aggregation.players]))

    @property
    def update_size(self) -> int:
        return sum(self.sizes) + len(self.spec.metric_names)

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
        clock = PhaseClock()
        with tf.device(self.model_owner.device_name):
            global_weights = [tf.identity(variable) for variable in self.model.weights]
        updates = {owner: trainer.update(global_weights, self.seed * 100_003 + index) for owner, trainer in self.trainers.items()}
        clock.lap("local_training")
        bounded = self.aggregation.bound(updates, len(self.spec.metric_names))
        mean = self.aggregation.aggregate(bounded.updates, clock)
        with tf.device(self.model_owner.device_name):
            parts = tf.split(mean, [*self.sizes, len(self.spec.metric_names)])
            new_values = [
                variable + self.server_learning_rate * tf.reshape(delta, variable.shape)
                for variable, delta in zip(global_weights, parts[:-1])
            ]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(value)) for value in new_values])
            metrics = parts[-1]
        if not bool(finite):
            raise FLError("the averaged update made the weights non-finite; lower the learning rate")
        metric_values = metrics.numpy()
        with tf.device(self.model_owner.device_name):
            for variable, value in zip(self.model.weights, new_values):
                variable.assign(value)
        clock.lap("model_update")
        return RoundResult(
            index=index,
            metrics=dict(zip(self.spec.metric_names, map(float, metric_values))),
            seconds=clock.elapsed,
            phase_seconds=clock.seconds,
            clipped=bounded.clipped,
            expected_bytes=self.aggregation.expected_bytes(list(self.trainers), self.update_size),
        )

    def _culprits(self) -> str:
        """Who does not answer now, asked of every player rather than guessed from TF's message."""
        silent = unreachable(self.players)
        if silent:
            return "not answering: " + ", ".join(player.name for player in silent)
        return "every player answers a status probe"
