"""The main job: federated training of a classifier on the running cluster (`fl train`)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from fl.aggregation.base import DEFAULT_MAX_CLIPPED_FRACTION
from fl.aggregation.registry import DEFAULT_AGGREGATION, make_aggregation
from fl.checkpoint import CheckpointEachRound, ModelOwnerCheckpoints, check_resumable
from fl.connection import connect
from fl.data.sources import owner_sources
from fl.errors import FLError
from fl.federated import FederatedLearning
from fl.metrics.training import TrainingMetrics
from fl.phases import DEFAULT_ROUND_TIMEOUT
from fl.results import write_json
from fl.rounds import quorum


@dataclass
class TrainSettings:
    aggregation: str = DEFAULT_AGGREGATION
    epochs: int = 10
    rounds_per_epoch: int = 1
    batch_size: int = 32
    local_epochs: int = 1
    learning_rate: float = 0.3
    hidden_units: int = 64
    algorithm: str = "fedavg"
    value_range: float = 32.0
    out_of_range: str = "clip"
    max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION
    seed: int = 0
    verbose: int = 1
    resume: bool = False
    round_timeout: float = DEFAULT_ROUND_TIMEOUT
    min_owners: int | None = None  # the quorum; None: every owner in every round

    @property
    def bounds(self) -> dict[str, Any]:
        """The aggregation's range policy."""
        return {
            "value_range": self.value_range,
            "out_of_range": self.out_of_range,
            "max_clipped_fraction": self.max_clipped_fraction,
        }


# how a run is carried out, not what it computes: a resumed run may change them
RUN_ONLY_SETTINGS = ("epochs", "verbose", "resume", "round_timeout", "min_owners")


def build_classifier(feature_size: int, num_classes: int, hidden_units: int, learning_rate: float) -> tf.keras.Model:
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Dense(hidden_units, activation="relu", input_shape=(feature_size,)),
            tf.keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(
    cluster_file: str,
    settings: TrainSettings,
    json_path: str | None = None,
    insecure_randomness: bool = False,
    save_path: str | None = None,
) -> dict:
    """Train, checkpointing on the model owner after every round; the JSON says how the run ended.

    `save_path`: where the final model goes on the model owner, in Keras format (ModelOwnerCheckpoints.export).
    """
    cluster = connect(cluster_file, insecure_randomness=insecure_randomness)
    aggregation = make_aggregation(settings.aggregation, cluster, **settings.bounds)
    train_data, test_data = owner_sources(cluster)
    quorum(settings.min_owners, len(train_data))  # before anything changes: a bad quorum must not clear checkpoints
    meta = cluster.dataset
    tf.keras.utils.set_random_seed(settings.seed)
    metrics = TrainingMetrics(settings.aggregation, Path(cluster.metrics.driver_textfile) if cluster.metrics else None)
    federated = FederatedLearning(
        cluster.model_owner,
        aggregation,
        algorithm=settings.algorithm,
        local_epochs=settings.local_epochs,
        batch_size=settings.batch_size,
        seed=settings.seed,
        round_listeners=[metrics],
        round_timeout=settings.round_timeout,
        min_owners=settings.min_owners,
    )
    with federated:
        model = build_classifier(meta.feature_size, meta.num_classes, settings.hidden_units, settings.learning_rate)
    checkpoints = ModelOwnerCheckpoints(cluster.model_owner, model)
    recorded = {name: value for name, value in asdict(settings).items() if name not in RUN_ONLY_SETTINGS}
    if settings.resume:
        resumed_from = _resume(checkpoints, recorded, federated)
    else:
        checkpoints.clear()
        resumed_from = 0
    federated.round_listeners.append(CheckpointEachRound(checkpoints, recorded))
    if settings.verbose:
        encoding = aggregation.describe()
        print(f"training on {len(train_data)} data owners with {aggregation!r}, {encoding} ({cluster.backend} backend)")
    summary = {
        "status": "running",
        "aggregation": settings.aggregation,
        "backend": cluster.backend,
        "data_owners": len(train_data),
        "dataset": meta.name,
        "links": cluster.links,
        "encoding": aggregation.describe(),
        "resumed_from_round": resumed_from,
        "model_parameters": sum(v.shape.num_elements() for v in model.weights),
        "settings": asdict(settings),
    }
    try:
        history = model.fit(
            train_data,
            epochs=settings.epochs,
            rounds_per_epoch=settings.rounds_per_epoch,
            initial_epoch=resumed_from // settings.rounds_per_epoch,
            verbose=settings.verbose,
        )
        test_loss, test_accuracy = model.evaluate(test_data, verbose=settings.verbose)
        if save_path:
            saved = checkpoints.export(save_path)
            summary["saved_model"] = {"player": cluster.model_owner.name, "path": saved}
            print(f"saved the model in Keras format on {cluster.model_owner.name}: {saved}")
    except (KeyboardInterrupt, FLError) as stopped:
        status = "interrupted" if isinstance(stopped, KeyboardInterrupt) else "failed"
        summary.update(status=status, error=str(stopped) or None, **_round_summary(federated))
        if json_path:
            write_json(json_path, summary)
        raise
    metrics.evaluated(test_loss, test_accuracy)
    summary.update(
        status="completed",
        test_accuracy=test_accuracy,
        test_loss=test_loss,
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        **_round_summary(federated),
    )
    if json_path:
        write_json(json_path, summary)
    return summary


def _resume(checkpoints: ModelOwnerCheckpoints, recorded: dict, federated: FederatedLearning) -> int:
    latest = checkpoints.latest()
    if latest is None:
        raise FLError(
            f"--resume: no checkpoint on {checkpoints.model_owner.name} ({checkpoints.directory}): start without --resume"
        )
    check_resumable(latest, recorded)
    checkpoints.restore(latest)
    federated.resume_from(latest.completed_rounds)
    print(f"resuming after round {latest.completed_rounds - 1}: the checkpoint on {checkpoints.model_owner.name}")
    return latest.completed_rounds


def _round_summary(federated: FederatedLearning) -> dict:
    """The model's completed rounds, and this process's rounds (a resumed run's earlier ones are in the first JSON)."""
    rounds = federated.round_results
    if not rounds:
        return {"rounds": 0, "completed_rounds": federated.completed_rounds}
    return {
        "rounds": len(rounds),
        "completed_rounds": federated.completed_rounds,
        "round_seconds": [r.seconds for r in rounds],
        "mean_round_seconds": statistics.fmean(r.seconds for r in rounds),
        "phase_seconds": {phase: statistics.fmean(r.phase_seconds[phase] for r in rounds) for phase in rounds[0].phase_seconds},
        "owner_training_seconds": _mean_per_owner([r.owner_training_seconds for r in rounds]),
        "dropped_owners": {r.index: r.dropped for r in rounds if r.dropped},
        "clipped_values": sum(sum(r.clipped.values()) for r in rounds),
        "expected_sent_bytes_per_round": rounds[-1].expected_bytes,
    }


def _mean_per_owner(per_round: list[dict[str, float]]) -> dict[str, float]:
    """Each owner's mean over the rounds it took part in."""
    owners = dict.fromkeys(owner for values in per_round for owner in values)
    return {owner: statistics.fmean(values[owner] for values in per_round if owner in values) for owner in owners}
