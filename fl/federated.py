"""The user-facing API of tfe issue #670: `FederatedLearning(model_owner, aggregation)`.

    with FederatedLearning(model_owner, aggregation) as federated:
        model = tf.keras.Sequential([...])   # weights are created on the model owner
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(data_sources, epochs=10)      # federated rounds over the data owners
    model.evaluate(test_data)                         # on the model owner's own data

`data_sources` holds one pipeline per data owner: `{owner: fn}` with `fn(owner)` building
that owner's `tf.data.Dataset` from graph ops, `OwnerPipeline`s, or the testbed's own
shards (`OwnerData`, fl/data/sources.py). Inside the context the model owner's device is in
scope and `compile` is intercepted: a compiled model whose weights are not on the model
owner is refused, and a model that passes gets federated `fit` and `evaluate`. The round's
settings come as small dataclasses (fl/policies.py): the owners' `LocalTraining`, the
model owner's `ServerOptimizer`, the `Weighting` of the average, the `RoundPolicy`, and
`DifferentialPrivacy` when the revealed sums must be differentially private (fl/privacy/): then
`fit`'s logs carry `epsilon` after every round instead of the owners' training metrics.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import tensorflow as tf

from fl import connection, report, stop_request
from fl.aggregation.base import Aggregation
from fl.cluster import Player
from fl.data.pipelines import OwnerPipeline, Pipeline, check_specs
from fl.data.sources import OwnerData
from fl.errors import FLError, LocalityError
from fl.local_training import OwnerTrainer, TrainingSpec, training_spec, unpack, weighted
from fl.local_training import batch_size as batch_size_of
from fl.metrics.training import TrainingMetrics
from fl.policies import DifferentialPrivacy, LocalTraining, RoundPolicy, ServerOptimizer, Weighting
from fl.privacy.accountant import PrivacyAccountant
from fl.rounds import RoundListener, RoundResult, RoundRunner
from fl.server_update import ServerUpdate

DataSources = Mapping[Player, "Pipeline | Callable[..., tf.data.Dataset]"] | Sequence[Pipeline]

logger = logging.getLogger(__name__)


class FederatedLearning:
    def __init__(
        self,
        model_owner: Player,
        aggregation: Aggregation,
        *,
        local: LocalTraining = LocalTraining(),
        server: ServerOptimizer = ServerOptimizer(),
        weighting: Weighting | str | None = None,
        rounds: RoundPolicy = RoundPolicy(),
        privacy: DifferentialPrivacy | None = None,
        seed: int = 0,
        round_listeners: Sequence[RoundListener] = (),
    ) -> None:
        """`weighting`: a Weighting, or "examples" / "uniform" with its default bound; None: by examples, or
        uniform under `privacy` (the only weighting DP allows)."""
        cluster = connection.current()
        if model_owner != cluster.model_owner:
            raise ValueError(f"{model_owner.name} is not the cluster's model owner {cluster.model_owner.name}")
        if aggregation.output_receiver != model_owner:
            raise ValueError(
                f"the aggregation reveals to {aggregation.output_receiver.name}, but the model owner is "
                f"{model_owner.name}: pass output_receiver=model_owner"
            )
        self.cluster = cluster
        self.model_owner = model_owner
        self.aggregation = aggregation
        self.local = local
        self.server = server
        weighting = weighting or ("uniform" if privacy else "examples")
        self.weighting = Weighting(weighting) if isinstance(weighting, str) else weighting
        if privacy and self.weighting.mode != "uniform":
            raise FLError(
                "DP averages uniformly: a weight would let one owner move the sum by more than the clip; "
                "use weighting uniform (fl train --weighting uniform)"
            )
        self.privacy = privacy
        self.rounds = rounds
        self.seed = seed
        self.round_results: list[RoundResult] = []  # this process's rounds
        self.completed_rounds = 0  # the model's rounds, a resumed run's earlier ones included
        self._resumed_rounds = 0  # rounds the next fit skips: done before a checkpoint was restored
        self.round_listeners = list(round_listeners)
        if cluster.metrics and not any(isinstance(listener, TrainingMetrics) for listener in self.round_listeners):
            # rounds are exported whatever script runs them (fl run), as fl train's are
            self.round_listeners.append(TrainingMetrics(aggregation.name, Path(cluster.metrics.driver_textfile)))
        record = report.join(f"{aggregation!r}; {self.describe()}")
        if record is not None:
            self.round_listeners.append(record)
        self._scope = None
        self._trainers: dict[tuple[int, Pipeline], OwnerTrainer] = {}
        self._runners: dict[tuple[int, tuple[Pipeline, ...]], RoundRunner] = {}
        self._accountants: dict[int, PrivacyAccountant] = {}  # by model, kept when a failed fit drops its runners
        self._server_updates: dict[int, ServerUpdate] = {}
        self._evaluations: dict[tuple[int, Pipeline, int], Callable[[], tf.Tensor]] = {}  # traced once, e.g. per epoch
        self._refresh_needed = False
        self._keras_compile: Callable | None = None

    def __enter__(self) -> FederatedLearning:
        self._scope = tf.device(self.model_owner.device_name)
        self._scope.__enter__()
        self._keras_compile = tf.keras.Model.compile
        federated = self

        def compile_on_model_owner(model: tf.keras.Model, *args, **kwargs):
            federated._keras_compile(model, *args, **kwargs)
            federated.adopt(
                model,
                kwargs.get("loss", args[1] if len(args) > 1 else None),
                kwargs.get("metrics", args[2] if len(args) > 2 else None),
            )

        tf.keras.Model.compile = compile_on_model_owner
        return self

    def __exit__(self, *exc_info) -> None:
        tf.keras.Model.compile = self._keras_compile
        self._scope.__exit__(*exc_info)

    def compile(self, model_fns: Mapping[Player, Callable[[], tf.keras.Model]]) -> tf.keras.Model:
        """Alternative to the context: `{model_owner: fn}` where fn builds and compiles the model."""
        unknown = [player.name for player in model_fns if player != self.model_owner]
        if unknown:
            raise LocalityError(
                f"models can only be built on the model owner {self.model_owner.name}, not on {', '.join(unknown)}"
            )
        with self:
            return model_fns[self.model_owner]()

    def adopt(self, model: tf.keras.Model, loss, metrics) -> None:
        """Check the model lives on the model owner and give it federated fit/evaluate."""
        if not model.built or not model.weights:
            raise LocalityError(
                "the model has no weights yet: give its first layer an input shape so they are created on the model owner"
            )
        wrong = [w.name for w in model.weights if not _same_device(w.device, self.model_owner.device_name)]
        if wrong:
            raise LocalityError(
                f"model weights {', '.join(wrong[:3])} are not on the model owner {self.model_owner.name}: "
                "build the model inside `with FederatedLearning(...)`"
            )
        spec = training_spec(model, loss, metrics)
        model.fit = lambda x, **kwargs: self.fit(model, spec, x, **kwargs)
        model.evaluate = lambda x, **kwargs: self.evaluate(model, spec, x, **kwargs)
        with tf.device(self.model_owner.device_name):
            self._server_updates[id(model)] = ServerUpdate(self.server, model.weights, self.model_owner.device_name)

    def describe(self) -> str:
        """The weighting and the model owner's update, as a run states them."""
        weighting = self.weighting
        weights = (
            f"weighted by examples (each owner's count / max_weight {weighting.max_weight:g}, summed inside the secure sum)"
            if weighting.mode == "examples"
            else "uniform"
        )
        proximal = f", FedProx mu {self.local.proximal_mu:g}" if self.local.proximal_mu else ""
        private = (
            f"; {self.privacy.name}: clip {self.privacy.clip_norm:g}, noise multiplier {self.privacy.noise_multiplier:g}"
            if self.privacy
            else ""
        )
        return f"{weights}; server optimizer {self.server.name}, learning rate {self.server.learning_rate:g}{proximal}{private}"

    def server_update(self, model: tf.keras.Model) -> ServerUpdate:
        """The model owner's optimizer for `model`: its state is checkpointed with the weights."""
        return self._server_updates[id(model)]

    def fit(
        self,
        model: tf.keras.Model,
        spec: TrainingSpec,
        x: DataSources,
        epochs: int = 1,
        rounds_per_epoch: int = 1,
        verbose: int | str = "auto",
        callbacks: Sequence[tf.keras.callbacks.Callback] | None = None,
        validation_data: Pipeline | Callable[..., tf.data.Dataset] | None = None,
        initial_epoch: int = 0,
    ) -> tf.keras.callbacks.History:
        """Federated training: `epochs` x `rounds_per_epoch` rounds over the owners' own data.

        As in Keras, `initial_epoch` resumes a run; after `resume_from`, the rounds of that epoch done before are skipped.
        """
        if epochs < 1 or rounds_per_epoch < 1:
            raise FLError(f"epochs {epochs}, rounds_per_epoch {rounds_per_epoch}: each must be at least 1")
        sources = self._data_sources(x)
        if validation_data is not None:
            validation_data = self._model_owner_pipeline(validation_data)  # one pipeline, so one trace for every epoch
        if self._refresh_needed:  # the last fit failed: players may have restarted since
            for runner in self._runners.values():  # reconnecting under a call still in flight can hang TF
                runner.settle(self.rounds.round_timeout)
            connection.refresh()
            self._trainers.clear()  # replicas on a restarted owner are gone
            self._runners.clear()  # and so are the functions registered there
            self._evaluations.clear()
        self._refresh_needed = True
        runner = self._runner(model, spec, sources)
        accountant = self.accountant(runner)
        if accountant is not None:
            accountant.check_first_round()
        verbose = 1 if verbose == "auto" else verbose
        callback_list = tf.keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=verbose != 0,
            model=model,
            verbose=verbose,
            epochs=epochs,
            steps=rounds_per_epoch,
        )
        model.stop_training = False
        skipped, self._resumed_rounds = max(self._resumed_rounds - initial_epoch * rounds_per_epoch, 0), 0
        callback_list.on_train_begin()
        logs: dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            first_step = skipped if epoch == initial_epoch else 0
            if first_step < rounds_per_epoch and _budget_spent(accountant, model):
                break
            callback_list.on_epoch_begin(epoch)
            for step in range(first_step, rounds_per_epoch):
                if step > first_step and _budget_spent(accountant, model):
                    break
                callback_list.on_train_batch_begin(step)
                result = self._run_round(runner)
                logs = {**result.metrics, "round_seconds": result.seconds}
                callback_list.on_train_batch_end(step, logs)
            if validation_data is not None:
                evaluated = self.evaluate(model, spec, validation_data, verbose=0, return_dict=True)
                logs = {**logs, **{f"val_{name}": value for name, value in evaluated.items()}}
            callback_list.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        callback_list.on_train_end(logs)
        self._refresh_needed = False
        return model.history

    def resume_from(self, completed_rounds: int) -> None:
        """The model's weights are those after `completed_rounds` rounds (a restored checkpoint): go on from there,
        their privacy spent too."""
        self.completed_rounds = self._resumed_rounds = completed_rounds

    def accountant(self, runner: RoundRunner) -> PrivacyAccountant | None:
        """The privacy spent by the rounds of `runner`'s model, from the runner's calibration."""
        if runner.privacy is None:
            return None
        key = id(runner.model)
        if key not in self._accountants:
            self._accountants[key] = PrivacyAccountant(runner.privacy)
            self._accountants[key].restore(self._resumed_rounds)
        return self._accountants[key]

    def _run_round(self, runner: RoundRunner) -> RoundResult:
        stop_request.raise_if_requested()
        index = self.completed_rounds
        try:
            result = runner.run(index)
        except FLError as error:
            for listener in self.round_listeners:
                listener.round_failed(index, error)
            raise
        accountant = self.accountant(runner)
        if accountant is not None:  # first, so every listener sees the round's epsilon
            accountant.round_completed(result)
        self.round_results.append(result)
        self.completed_rounds += 1
        if any(result.clipped.values()):
            listed = ", ".join(f"{owner} {count}" for owner, count in result.clipped.items() if count)
            logger.warning(
                "round %d: clipped values outside ±%g (%s); see max_clipped_fraction",
                index,
                self.aggregation.value_range,
                listed,
            )
        if result.dropped:
            listed = ", ".join(f"{owner} ({reason})" for owner, reason in result.dropped.items())
            logger.warning("round %d: averaged %d owners without %s", index, len(result.participants), listed)
        for listener in self.round_listeners:
            listener.round_completed(result)
        return result

    def evaluate(
        self,
        model: tf.keras.Model,
        spec: TrainingSpec,
        x: Pipeline | Callable[..., tf.data.Dataset],
        batch_size: int = 256,
        verbose: int | str = "auto",
        return_dict: bool = False,
    ):
        """Loss and metrics of the global model on the model owner's own data (a pipeline there), computed there."""
        x = self._model_owner_pipeline(x)
        if x.player != self.model_owner:
            raise LocalityError(
                f"evaluate runs on the model owner {self.model_owner.name}; pass data that lives there, not on {x.player.name}"
            )
        started = time.perf_counter()
        key = (id(model), x, batch_size)
        if key not in self._evaluations:
            self._evaluations[key] = _evaluation_function(model, spec, x, batch_size)
        with tf.device(self.model_owner.device_name):
            totals = self._evaluations[key]().numpy()
        values = dict(zip(spec.metric_names, map(float, totals[:-1] / max(totals[-1], 1.0))))
        if verbose not in (0, "0"):
            shown = " - ".join(f"{name}: {value:.4f}" for name, value in values.items())
            elapsed = time.perf_counter() - started
            print(f"evaluate on {self.model_owner.name}: {int(totals[-1])} examples - {shown} - {elapsed:.2f}s")
        return values if return_dict else list(values.values())

    def _model_owner_pipeline(self, x: Pipeline | Callable[..., tf.data.Dataset]) -> Pipeline:
        return OwnerPipeline(self.model_owner, x) if callable(x) and not hasattr(x, "player") else x

    def _runner(self, model: tf.keras.Model, spec: TrainingSpec, sources: dict[Player, Pipeline]) -> RoundRunner:
        """One runner per (model, data sources), kept across fit calls so its compiled stages are traced once.

        A new runner first traces every owner's pipeline on the driver (no op runs) to check its element spec.
        """
        key = (id(model), tuple(sources.values()))
        if key not in self._runners:
            check_specs(sources, self.local.batch_size, model, functools.partial(_probe, model, spec))
            self._runners[key] = RoundRunner(
                self.cluster,
                model,
                self.aggregation,
                {owner: functools.partial(self._trainer, model, spec, data) for owner, data in sources.items()},
                spec,
                self.server_update(model),
                self.seed,
                self.rounds,
                self.weighting,
                self.privacy,
            )
        return self._runners[key]

    def _trainer(self, model: tf.keras.Model, spec: TrainingSpec, data: Pipeline) -> OwnerTrainer:
        """One replica per (model, data source), kept across fit calls like Keras keeps its train function."""
        key = (id(model), data)
        if key not in self._trainers:
            self._trainers[key] = OwnerTrainer(model, data, spec, self.local)
        return self._trainers[key]

    def _data_sources(self, x: DataSources) -> dict[Player, Pipeline]:
        if isinstance(x, Mapping):
            wrong_key = [player.name for player, source in x.items() if getattr(source, "player", player) != player]
            if wrong_key:
                raise LocalityError(
                    f"data given for {', '.join(wrong_key)} lives on another player; key each source by its owner"
                )
            sources = [source if hasattr(source, "player") else OwnerPipeline(player, source) for player, source in x.items()]
        else:
            sources = list(x) if isinstance(x, Sequence) else []
        if not sources or not all(isinstance(source, (OwnerData, OwnerPipeline)) for source in sources):
            raise FLError(
                "fit takes one pipeline per data owner: {owner: fn} with fn(owner) -> tf.data.Dataset, "
                "OwnerPipeline(owner, fn)s, or OwnerData shards (fl.data.owner_sources); not arrays"
            )
        owners = [source.player for source in sources]
        not_owners = [p.name for p in owners if p not in self.cluster.data_owners]
        if not_owners:
            raise LocalityError(f"{', '.join(not_owners)} are not data owners; training data must live on data owners")
        if len(set(owners)) != len(owners):
            raise FLError("two data sources belong to the same owner; give one pipeline per data owner")
        if len(owners) < 2:
            raise FLError("secure averaging needs at least 2 data owners")
        return {source.player: source for source in sources}


def _budget_spent(accountant: PrivacyAccountant | None, model: tf.keras.Model) -> bool:
    """Whether the next round would exceed the privacy target: then training stops, saying so."""
    exhausted = accountant.check_budget() if accountant else None
    if exhausted:
        print(exhausted)
        model.stop_training = True
    return exhausted is not None


def _probe(model: tf.keras.Model, spec: TrainingSpec, element) -> tf.Tensor:
    """What a training step does with one element, traced only: does the model take it, and its loss?"""
    features, labels, sample_weights = unpack(element)
    predictions = model(features, training=False)
    return tf.reduce_sum(weighted(spec.per_example_loss(labels, predictions), sample_weights))


def _evaluation_function(model: tf.keras.Model, spec: TrainingSpec, data: Pipeline, batch_size: int):
    @tf.function
    def evaluate() -> tf.Tensor:
        totals = tf.zeros([len(spec.metric_names) + 1], tf.float32)
        for element in data.dataset(batch_size):
            features, labels, sample_weights = unpack(element)
            predictions = model(features, training=False)
            values = [tf.reduce_sum(weighted(spec.per_example_loss(labels, predictions), sample_weights))]
            values += [
                tf.reduce_sum(weighted(tf.cast(fn(labels, predictions), tf.float32), sample_weights)) for _, fn in spec.metrics
            ]
            values.append(
                tf.reduce_sum(sample_weights) if sample_weights is not None else tf.cast(batch_size_of(labels), tf.float32)
            )
            totals += tf.stack(values)
        return totals

    return evaluate


def _same_device(a: str, b: str) -> bool:
    return tf.DeviceSpec.from_string(a).to_string().lower() == tf.DeviceSpec.from_string(b).to_string().lower()
