"""The main job: federated training of a classifier on the running cluster (`fl train`)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from fl.aggregation import ABY3SecureAverage, AdditiveSecureAverage, Aggregation, PlaintextAverage, PondSecureAverage
from fl.cluster import AGGREGATIONS, DEFAULT_AGGREGATION, Cluster
from fl.connection import connect
from fl.data.sources import owner_sources
from fl.errors import FLError
from fl.federated import FederatedLearning
from fl.metrics.training import TrainingMetrics


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
    seed: int = 0
    verbose: int = 1


def make_aggregation(name: str, cluster: Cluster, value_range: float = 32.0, out_of_range: str = "clip") -> Aggregation:
    """The named aggregation, wired to this cluster's players."""
    cluster.require_protocol(name)
    receiver = cluster.model_owner
    if name == "additive":
        return AdditiveSecureAverage(cluster.data_owners, receiver, value_range, out_of_range)
    if name == "pond":
        server_0, server_1, producer = cluster.compute_servers[:3]
        return PondSecureAverage([server_0, server_1], producer, receiver, value_range, out_of_range)
    if name == "aby3":
        return ABY3SecureAverage(cluster.compute_servers[:3], receiver, value_range, out_of_range)
    return PlaintextAverage(receiver, value_range, out_of_range)


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


def train(cluster_file: str, settings: TrainSettings, json_path: str | None = None, insecure_randomness: bool = False) -> dict:
    cluster = connect(cluster_file, insecure_randomness=insecure_randomness)
    if settings.aggregation not in AGGREGATIONS:
        raise FLError(f"unknown aggregation {settings.aggregation!r}; use one of {', '.join(AGGREGATIONS)}")
    aggregation = make_aggregation(settings.aggregation, cluster, settings.value_range, settings.out_of_range)
    train_data, test_data = owner_sources(cluster)
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
    )
    with federated:
        model = build_classifier(meta.feature_size, meta.num_classes, settings.hidden_units, settings.learning_rate)
    if settings.verbose:
        print(f"training on {len(train_data)} data owners with {aggregation!r} ({cluster.backend} backend)")
    history = model.fit(train_data, epochs=settings.epochs, rounds_per_epoch=settings.rounds_per_epoch, verbose=settings.verbose)
    test_loss, test_accuracy = model.evaluate(test_data, verbose=settings.verbose)
    metrics.evaluated(test_loss, test_accuracy)
    rounds = federated.round_results
    summary = {
        "aggregation": settings.aggregation,
        "backend": cluster.backend,
        "data_owners": len(train_data),
        "dataset": meta.name,
        "links": cluster.links,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "rounds": len(rounds),
        "round_seconds": [r.seconds for r in rounds],
        "mean_round_seconds": statistics.fmean(r.seconds for r in rounds),
        "phase_seconds": {phase: statistics.fmean(r.phase_seconds[phase] for r in rounds) for phase in rounds[0].phase_seconds},
        "clipped_values": sum(sum(r.clipped.values()) for r in rounds),
        "expected_sent_bytes_per_round": rounds[-1].expected_bytes,
        "model_parameters": sum(v.shape.num_elements() for v in model.weights),
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "settings": settings.__dict__,
    }
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
