"""The main job: federated training of a classifier on the running cluster (`fl train`)."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path

import tensorflow as tf

from fl import report
from fl.aggregation.registry import make_aggregation
from fl.checkpoint import CheckpointEachRound, ModelOwnerCheckpoints, check_resumable
from fl.connection import connect
from fl.data.sources import owner_sources
from fl.errors import FLError
from fl.federated import FederatedLearning
from fl.metrics.training import TrainingMetrics
from fl.results import write_json
from fl.rounds import quorum
from fl.settings import RUN_ONLY_SETTINGS, TrainSettings

# what the report's table shows of the summary, before the settings
REPORTED = (
    "status",
    "error",
    "test_accuracy",
    "test_loss",
    "rounds",
    "mean_round_seconds",
    "completed_rounds",
    "resumed_from_round",
    "backend",
    "links",
    "encoding",
    "data_owners",
    "model_parameters",
    "dropped_owners",
    "clipped_values",
    "epsilon",
    "delta",
)


def build_classifier(feature_shape: tuple[int, ...], num_classes: int, hidden_units: int, learning_rate: float) -> tf.keras.Model:
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Flatten(input_shape=tuple(feature_shape)),
            tf.keras.layers.Dense(hidden_units, activation="relu"),
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
    """Train, checkpointing on the model owner after every round; the JSON, and the HTML report beside it, say how
    the run ended.

    `save_path`: where the final model goes on the model owner, in Keras format (ModelOwnerCheckpoints.export).
    """
    with report.recording() as records:
        return _train(cluster_file, settings, json_path, insecure_randomness, save_path, records)


def _train(
    cluster_file: str,
    settings: TrainSettings,
    json_path: str | None,
    insecure_randomness: bool,
    save_path: str | None,
    records: list[report.RunRecord],
) -> dict:
    cluster = connect(cluster_file, insecure_randomness=insecure_randomness)
    aggregation = make_aggregation(settings.aggregation, cluster, settings.range_policy)
    train_data, test_data = owner_sources(cluster)
    quorum(settings.min_owners, len(train_data))  # before anything changes: a bad quorum must not clear checkpoints
    meta = cluster.dataset
    if not meta.num_classes:
        raise FLError(
            f"fl train trains the built-in classifier, and {meta.name} is a regression: "
            "run your own model with `fl run examples/regression.py`"
        )
    tf.keras.utils.set_random_seed(settings.seed)
    metrics = TrainingMetrics(settings.aggregation, Path(cluster.metrics.driver_textfile) if cluster.metrics else None)
    federated = FederatedLearning(
        cluster.model_owner,
        aggregation,
        local=settings.local_training,
        server=settings.server,
        weighting=settings.weighting_policy,
        rounds=settings.round_policy,
        privacy=settings.privacy,
        seed=settings.seed,
        round_listeners=[metrics],
    )
    with federated:
        model = build_classifier(meta.feature_shape, meta.num_classes, settings.hidden_units, settings.learning_rate)
    checkpoints = ModelOwnerCheckpoints(cluster.model_owner, model, federated.server_update(model).state)
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
        print(f"averaging: {federated.describe()}")
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
        if settings.privacy and federated.round_results:
            spent = federated.round_results[-1].metrics["epsilon"]
            rounds = federated.completed_rounds
            print(f"privacy spent: epsilon {spent:.4g} at delta {settings.privacy.delta:g}, owner-level, over {rounds} rounds")
        if save_path:
            saved = checkpoints.export(save_path)
            summary["saved_model"] = {"player": cluster.model_owner.name, "path": saved}
            print(f"saved the model in Keras format on {cluster.model_owner.name}: {saved}")
    except (KeyboardInterrupt, FLError) as stopped:
        status = "interrupted" if isinstance(stopped, KeyboardInterrupt) else "failed"
        summary.update(status=status, error=str(stopped) or None, **_round_summary(federated))
        if json_path:
            write_results(json_path, summary, records)
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
        write_results(json_path, summary, records)
    return summary


def write_results(json_path: str, summary: dict, records: list[report.RunRecord]) -> None:
    """The summary as JSON, and its report as HTML with the same name."""
    write_json(json_path, summary)
    facts = {name: summary[name] for name in REPORTED if name in summary}
    title = f"fl train: {summary['aggregation']} on {summary['dataset']}, {summary['data_owners']} owners ({summary['status']})"
    report.write_run_report(Path(json_path).with_suffix(".html"), title, records, facts, summary["settings"])


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
        **_privacy_summary(federated),
    }


def _privacy_summary(federated: FederatedLearning) -> dict:
    """Under DP: epsilon by round (this process's rounds), the last epsilon and delta, the owners clipped by round."""
    rounds = federated.round_results
    if federated.privacy is None:
        return {}
    return {
        "epsilon_by_round": {r.index: r.metrics["epsilon"] for r in rounds},
        "epsilon": rounds[-1].metrics["epsilon"],
        "delta": federated.privacy.delta,
        "privacy": federated.privacy.name,
        "clipped_owners_by_round": {r.index: len(r.norm_clipped) / len(r.participants) for r in rounds},
    }


def _mean_per_owner(per_round: list[dict[str, float]]) -> dict[str, float]:
    """Each owner's mean over the rounds it took part in."""
    owners = dict.fromkeys(owner for values in per_round for owner in values)
    return {owner: statistics.fmean(values[owner] for values in per_round if owner in values) for owner in owners}
