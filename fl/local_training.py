"""A data owner's side of a round: its replica of the model, trained on its own data.

Everything here runs on the owner's device: the replica's variables, the
optimizer state, the input pipeline, the training loop. What leaves the owner is
one flat vector: the weight delta of this round followed by its mean training
metrics, which the aggregation then averages.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from fl.data.sources import OwnerData
from fl.errors import UpdateMismatchError


@dataclass(frozen=True)
class TrainingSpec:
    """What the model owner compiled: loss, metrics (name, per-example fn) and optimizer."""

    per_example_loss: object
    metrics: tuple[tuple[str, object], ...]
    optimizer_config: dict
    optimizer_class: type

    @property
    def metric_names(self) -> list[str]:
        return ["loss", *(name for name, _ in self.metrics)]


def training_spec(model: tf.keras.Model, loss, metrics) -> TrainingSpec:
    """Resolve compile() arguments the way Keras does, for use on every owner."""
    loss_object = tf.keras.losses.get(loss)
    per_example_loss = loss_object.call if isinstance(loss_object, tf.keras.losses.Loss) else loss_object
    resolved = []
    for metric in metrics or []:
        name = metric if isinstance(metric, str) else getattr(metric, "__name__", type(metric).__name__)
        if metric in ("accuracy", "acc"):
            sparse = "sparse" in (getattr(loss_object, "name", None) or getattr(loss_object, "__name__", ""))
            function = tf.keras.metrics.sparse_categorical_accuracy if sparse else tf.keras.metrics.categorical_accuracy
            name = "accuracy"
        else:
            function = tf.keras.metrics.get(metric)
        resolved.append((name, function))
    optimizer = model.optimizer
    return TrainingSpec(per_example_loss, tuple(resolved), optimizer.get_config(), type(optimizer))


class OwnerTrainer:
    """The model replica on one data owner."""

    def __init__(
        self,
        model: tf.keras.Model,
        data: OwnerData,
        spec: TrainingSpec,
        batch_size: int,
        local_epochs: int,
        local_steps: int | None,
    ) -> None:
        self.owner = data.player
        self.data = data
        self.spec = spec
        self.batch_size = batch_size
        self.local_epochs = local_epochs
        self.local_steps = local_steps
        with tf.device(self.owner.device_name):
            self.replica = tf.keras.models.clone_model(model)
            self.optimizer = spec.optimizer_class.from_config(spec.optimizer_config)
            self.optimizer.build(self.replica.trainable_variables)
        self._train = tf.function(self._local_round)

    def update(self, global_weights: list[tf.Tensor], round_seed: tf.Tensor) -> tf.Tensor:
        """Train from `global_weights`; return [delta..., mean metrics] on the owner's device.

        The weights are copied onto the owner before the call: a function whose inputs sit on
        another player would make this owner run a component there, a call the mesh refuses
        to every player but the driver (fl/mesh/policy.py).
        """
        try:
            with tf.device(self.owner.device_name):
                local_weights = [tf.identity(weights) for weights in global_weights]
                return self._train(local_weights, round_seed)
        except ValueError as error:
            raise UpdateMismatchError(
                f"{self.owner.name}: its model does not match the model owner's weights "
                f"({str(error).strip().splitlines()[-1].strip()}); every owner must train the same model"
            ) from None

    def _batches(self, round_seed: tf.Tensor) -> tf.data.Dataset:
        batches = self.data.dataset(self.batch_size, shuffle_seed=round_seed)
        if self.local_steps:
            return batches.repeat().take(self.local_steps)
        return batches.repeat(self.local_epochs)

    def _local_round(self, global_weights: list[tf.Tensor], round_seed: tf.Tensor) -> tf.Tensor:
        for variable, value in zip(self.replica.weights, global_weights):
            variable.assign(value)
        totals = tf.zeros([len(self.spec.metric_names)], tf.float32)
        examples = tf.constant(0.0)
        for features, labels in self._batches(round_seed):
            with tf.GradientTape() as tape:
                predictions = self.replica(features, training=True)
                per_example = self.spec.per_example_loss(labels, predictions)
                loss = tf.reduce_mean(per_example) + tf.add_n([0.0, *self.replica.losses])
            gradients = tape.gradient(loss, self.replica.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, self.replica.trainable_variables))
            values = [tf.reduce_sum(per_example)]
            values += [tf.reduce_sum(tf.cast(fn(labels, predictions), tf.float32)) for _, fn in self.spec.metrics]
            totals += tf.stack(values)
            examples += tf.cast(tf.shape(labels)[0], tf.float32)
        deltas = [tf.reshape(variable - value, [-1]) for variable, value in zip(self.replica.weights, global_weights)]
        return tf.concat([*deltas, totals / tf.maximum(examples, 1.0)], axis=0)
