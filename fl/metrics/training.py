"""The driver's training metrics: round latency, phases, outcomes, expected bytes, loss and accuracy, privacy spent.

A training run is a short-lived process, so after every round (and at the end)
it writes its registry to a textfile; `fl driver-metrics` serves that file, so
the last numbers stay scrapeable after the run has ended.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, write_to_textfile

from fl.errors import FLError
from fl.phases import PHASES
from fl.rounds import RoundResult

ROUND_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0)
PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class TrainingMetrics:
    """A RoundListener that keeps one training run's metrics, labelled by aggregation."""

    def __init__(self, aggregation: str, textfile: Path | None = None) -> None:
        disable_created_metrics()
        self.aggregation = aggregation
        self.textfile = textfile
        self.registry = CollectorRegistry()
        labels = ["aggregation"]
        self.round_duration = Histogram(
            "fl_round_duration_seconds", "Wall time of a federated round", labels, buckets=ROUND_BUCKETS, registry=self.registry
        )
        self.phase_duration = Histogram(
            "fl_round_phase_duration_seconds",
            "Wall time of each phase of a round",
            [*labels, "phase"],
            buckets=PHASE_BUCKETS,
            registry=self.registry,
        )
        self.owner_training = Histogram(
            "fl_owner_local_training_seconds",
            "Wall time of one data owner's local training in a round (the slowest owner is the straggler)",
            [*labels, "owner"],
            buckets=PHASE_BUCKETS,
            registry=self.registry,
        )
        self.participants = Gauge(
            "fl_round_participants", "Data owners whose updates the last round averaged", labels, registry=self.registry
        )
        self.owner_dropped = Counter(
            "fl_owner_dropped_rounds_total",
            "Rounds that went on without this data owner's update (it missed the local-training deadline)",
            [*labels, "owner"],
            registry=self.registry,
        )
        self.rounds_completed = Counter(
            "fl_rounds_completed_total", "Rounds applied to the model", labels, registry=self.registry
        )
        self.rounds_failed = Counter(
            "fl_rounds_failed_total", "Rounds that failed and left the model unchanged", labels, registry=self.registry
        )
        self.clipped = Counter(
            "fl_update_values_clipped_total", "Update values clipped to the fixed-point range", labels, registry=self.registry
        )
        self.expected_sent = Gauge(
            "fl_round_expected_sent_bytes",
            "Bytes a player sends per round by the protocol's own accounting (payload, no framing)",
            [*labels, "player"],
            registry=self.registry,
        )
        self.loss = Gauge(
            "fl_model_loss",
            "Model loss: round average on the owners (train) or on the model owner (test)",
            [*labels, "data"],
            registry=self.registry,
        )
        self.accuracy = Gauge("fl_model_accuracy", "Model accuracy, as fl_model_loss", [*labels, "data"], registry=self.registry)
        self.epsilon = Gauge(
            "fl_privacy_epsilon",
            "Owner-level epsilon the revealed sums have spent so far, at the run's delta (distributed or central DP)",
            labels,
            registry=self.registry,
        )
        self.clipped_owners = Gauge(
            "fl_privacy_clipped_owners_ratio",
            "Fraction of the last round's owners whose update was clipped to the DP clip norm",
            labels,
            registry=self.registry,
        )
        self.last_round = Gauge(
            "fl_round_last_completed_timestamp_seconds", "When the last round completed", labels, registry=self.registry
        )
        # Every series exists, at zero, from before the first round: a rate over the run then
        # counts its first rounds too, and a phase a protocol never spends time in still shows.
        for phase in PHASES:
            self.phase_duration.labels(aggregation, phase)
        for metric in (self.round_duration, self.rounds_completed, self.rounds_failed, self.clipped):
            metric.labels(aggregation)
        self.write()

    def round_completed(self, result: RoundResult) -> None:
        aggregation = self.aggregation
        self.round_duration.labels(aggregation).observe(result.seconds)
        for phase, seconds in result.phase_seconds.items():
            self.phase_duration.labels(aggregation, phase).observe(seconds)
        for owner, seconds in result.owner_training_seconds.items():
            self.owner_training.labels(aggregation, owner).observe(seconds)
        self.participants.labels(aggregation).set(len(result.participants))
        for owner in result.participants:
            self.owner_dropped.labels(aggregation, owner)  # the series exists, at zero, for every owner
        for owner in result.dropped:
            self.owner_dropped.labels(aggregation, owner).inc()
        self.rounds_completed.labels(aggregation).inc()
        self.clipped.labels(aggregation).inc(sum(result.clipped.values()))
        for player, sent in result.expected_bytes.items():
            self.expected_sent.labels(aggregation, player).set(sent)
        if "loss" in result.metrics:
            self.loss.labels(aggregation, "train").set(result.metrics["loss"])
        if "accuracy" in result.metrics:
            self.accuracy.labels(aggregation, "train").set(result.metrics["accuracy"])
        if "epsilon" in result.metrics:
            self.epsilon.labels(aggregation).set(result.metrics["epsilon"])
            self.clipped_owners.labels(aggregation).set(len(result.norm_clipped) / len(result.participants))
        self.last_round.labels(aggregation).set(time.time())
        self.write()

    def round_failed(self, index: int, error: FLError) -> None:
        self.rounds_failed.labels(self.aggregation).inc()
        self.write()

    def evaluated(self, loss: float, accuracy: float) -> None:
        self.loss.labels(self.aggregation, "test").set(loss)
        self.accuracy.labels(self.aggregation, "test").set(accuracy)
        self.write()

    def write(self) -> None:
        if self.textfile is not None:
            self.textfile.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(self.textfile), self.registry)
