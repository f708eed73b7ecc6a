"""The model owner's update: the averaged delta applied to the global model by a server optimizer.

Apart from the round's orchestration, as Flower keeps its `Strategy` apart from the workflow
and TFF its `server_optimizer_fn`. The averaged delta is a pseudo-gradient pointing downhill
(Reddi et al. 2021, "Adaptive Federated Optimization"): FedAvg adds it scaled by the server
learning rate, FedAvgM through a momentum, FedAdam, FedYogi and FedAdagrad through a first
moment divided by the root of a second moment plus `epsilon` (tau in the paper).

The state (moments, step) lives in variables on the model owner, checkpointed with the
weights (`state`), so a resumed run continues exactly. Every variable, weights and state,
changes by `assign_add` of a difference that is zero unless the round is applied: a late
call, refused by the model owner's clock, can never undo a later round.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from fl.policies import ServerOptimizer


class ServerUpdate:
    """`optimizer` over `weights` (the model's, on `device`): traced into the compiled aggregation stage."""

    def __init__(self, optimizer: ServerOptimizer, weights: Sequence[tf.Variable], device: str) -> None:
        self.optimizer = optimizer
        self.weights = list(weights)
        with tf.device(device):
            self.step = tf.Variable(tf.zeros([], tf.int64), trainable=False, name="server_step")
            self.first_moments = self._moments("server_m") if optimizer.name != "sgd" else []
            adaptive = optimizer.name in ("adam", "yogi", "adagrad")
            self.second_moments = self._moments("server_v") if adaptive else []

    def _moments(self, name: str) -> list[tf.Variable]:
        return [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False, name=name) for v in self.weights]

    @property
    def state(self) -> list[tf.Variable]:
        """What a checkpoint keeps besides the weights."""
        return [self.step, *self.first_moments, *self.second_moments]

    def steps(self, deltas: Sequence[tf.Tensor]) -> tuple[list[tf.Tensor], list[tuple[tf.Variable, tf.Tensor]]]:
        """Each weight's step for these averaged deltas, and each state variable's new value (not yet assigned)."""
        settings = self.optimizer
        rate = settings.learning_rate
        if settings.name == "sgd":
            return [rate * delta for delta in deltas], [(self.step, self.step + 1)]
        updates: list[tuple[tf.Variable, tf.Tensor]] = [(self.step, self.step + 1)]
        steps = []
        for index, delta in enumerate(deltas):
            m = self.first_moments[index]
            if settings.name == "momentum":
                new_m = settings.momentum * m + delta
                steps.append(rate * new_m)
                updates.append((m, new_m))
                continue
            new_m = settings.beta_1 * m + (1 - settings.beta_1) * delta
            v = self.second_moments[index]
            squared = tf.square(delta)
            if settings.name == "adam":
                new_v = settings.beta_2 * v + (1 - settings.beta_2) * squared
            elif settings.name == "yogi":
                new_v = v - (1 - settings.beta_2) * squared * tf.sign(v - squared)
            else:  # adagrad
                new_v = v + squared
            steps.append(rate * new_m / (tf.sqrt(new_v) + settings.epsilon))
            updates += [(m, new_m), (v, new_v)]
        return steps, updates

    def apply(self, deltas: Sequence[tf.Tensor], accepted: tf.Tensor) -> tuple[list[tf.Operation], tf.Tensor, tf.Tensor]:
        """Trace the update under the model owner's device: (assignments, whether the weights stay finite, applied).

        `accepted` is the round's own verdict (aggregation checks, deadline); the update is applied only if it also
        keeps every weight finite.
        """
        steps, state_updates = self.steps(deltas)
        weights_finite = tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(v.read_value() + step)) for v, step in zip(self.weights, steps)]
        )
        applied = accepted & weights_finite
        changes = [(v, step) for v, step in zip(self.weights, steps)]
        changes += [(variable, value - variable.read_value()) for variable, value in state_updates]
        assignments = [v.assign_add(tf.where(applied, change, tf.zeros_like(change))) for v, change in changes]
        return assignments, weights_finite, applied
