"""A data owner's side of a round: its replica of the model, trained on its own data.

Everything here runs on the owner's device: the replica's variables, the
optimizer state, the input pipeline, the training loop. What leaves the owner is
one flat vector: the weight delta of this round, its mean training metrics and the
number of examples of one local epoch (the sum of their sample weights; FedSGD: of its
one step), McMahan et al.'s n_k, which the aggregation turns into the owner's weight.

A pipeline yields `(features, labels)` or `(features, labels, sample_weights)`, as
Keras's `fit` takes them. FedProx (Li et al. 2020) adds `mu/2 * ||w - w_global||^2`
to every local step's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from fl.data.pipelines import Pipeline
from fl.errors import UpdateMismatchError
from fl.policies import LocalTraining


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
    per_example_loss = _matched(loss_object.call if isinstance(loss_object, tf.keras.losses.Loss) else loss_object)
    resolved = []
    for metric in metrics or []:
        name = metric if isinstance(metric, str) else getattr(metric, "__name__", type(metric).__name__)
        if metric in ("accuracy", "acc"):
            sparse = "sparse" in (getattr(loss_object, "name", None) or getattr(loss_object, "__name__", ""))
            function = tf.keras.metrics.sparse_categorical_accuracy if sparse else tf.keras.metrics.categorical_accuracy
            name = "accuracy"
        else:
            function = tf.keras.metrics.get(metric)
        resolved.append((name, _matched(function)))
    optimizer = model.optimizer
    return TrainingSpec(per_example_loss, tuple(resolved), optimizer.get_config(), type(optimizer))


def _matched(function):
    """`function(labels, predictions)` with labels of shape [batch] given a trailing axis to match predictions of
    [batch, 1], as Keras's fit does: else a regression's MSE would broadcast to [batch, batch]."""

    def per_example(labels, predictions):
        if labels.shape.rank is not None and predictions.shape.rank == labels.shape.rank + 1 and predictions.shape[-1] == 1:
            labels = tf.expand_dims(labels, -1)
        return function(labels, predictions)

    return per_example


class OwnerTrainer:
    """The model replica on one data owner."""

    def __init__(self, model: tf.keras.Model, data: Pipeline, spec: TrainingSpec, settings: LocalTraining) -> None:
        self.owner = data.player
        self.data = data
        self.spec = spec
        self.settings = settings
        with tf.device(self.owner.device_name):
            self.replica = tf.keras.models.clone_model(model)
            self.optimizer = spec.optimizer_class.from_config(spec.optimizer_config)
            self.optimizer.build(self.replica.trainable_variables)
        self._train = tf.function(self._local_round)

    def update(self, global_weights: list[tf.Tensor], round_seed: tf.Tensor) -> tf.Tensor:
        """Train from `global_weights`; return [delta..., mean metrics, examples] on the owner's device.

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
        batches = self.data.dataset(self.settings.batch_size, shuffle_seed=round_seed)
        if self.settings.local_steps:
            return batches.repeat().take(self.settings.local_steps)
        return batches.repeat(self.settings.local_epochs)

    def _local_round(self, global_weights: list[tf.Tensor], round_seed: tf.Tensor) -> tf.Tensor:
        for variable, value in zip(self.replica.weights, global_weights):
            variable.assign(value)
        anchors = {id(variable): value for variable, value in zip(self.replica.weights, global_weights)}
        trainable = self.replica.trainable_variables
        mu = self.settings.proximal_mu
        totals = tf.zeros([len(self.spec.metric_names)], tf.float32)
        examples = tf.constant(0.0)
        for element in self._batches(round_seed):
            features, labels, sample_weights = unpack(element)
            with tf.GradientTape() as tape:
                predictions = self.replica(features, training=True)
                per_example = weighted(self.spec.per_example_loss(labels, predictions), sample_weights)
                loss = tf.reduce_mean(per_example) + tf.add_n([0.0, *self.replica.losses])
                if mu:
                    distances = [tf.reduce_sum(tf.square(v - anchors[id(v)])) for v in trainable]
                    loss += mu / 2 * tf.add_n(distances)
            gradients = tape.gradient(loss, trainable)
            self.optimizer.apply_gradients(zip(gradients, trainable))
            values = [tf.reduce_sum(per_example)]
            values += [
                tf.reduce_sum(weighted(tf.cast(fn(labels, predictions), tf.float32), sample_weights))
                for _, fn in self.spec.metrics
            ]
            totals += tf.stack(values)
            examples += tf.reduce_sum(sample_weights) if sample_weights is not None else tf.cast(batch_size(labels), tf.float32)
        deltas = [tf.reshape(variable - value, [-1]) for variable, value in zip(self.replica.weights, global_weights)]
        passes = 1 if self.settings.local_steps else self.settings.local_epochs
        metrics = totals / tf.maximum(examples, 1e-12)
        return tf.concat([*deltas, metrics, (examples / passes)[tf.newaxis]], axis=0)


def unpack(element) -> tuple:
    """A pipeline element as (features, labels, sample_weights or None), as Keras reads it."""
    if isinstance(element, tuple) and len(element) in (2, 3):
        return (*element, None) if len(element) == 2 else element
    raise UpdateMismatchError(
        f"a training pipeline yields (features, labels) or (features, labels, sample_weights); got {type(element).__name__}"
    )


def weighted(per_example: tf.Tensor, sample_weights: tf.Tensor | None) -> tf.Tensor:
    """Per-example values times their sample weights (one per example, as Keras's `sample_weight`)."""
    if sample_weights is None:
        return per_example
    weights = tf.cast(sample_weights, per_example.dtype)
    return per_example * tf.reshape(weights, tf.concat([tf.shape(weights), tf.ones([tf.rank(per_example) - 1], tf.int32)], 0))


def batch_size(labels) -> tf.Tensor:
    """Examples in a batch: the leading dimension of the (first) labels tensor."""
    return tf.shape(tf.nest.flatten(labels)[0])[0]
