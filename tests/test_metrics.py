"""Metrics against a real Prometheus (Debian's, started by `fl up`) scraping a real short training run."""

from __future__ import annotations

import subprocess
import urllib.request

import pytest
from promql import dashboard_queries, has_data, query, wait_for

from fl.backends.local import StateDir
from fl.cluster import Cluster
from fl.errors import FLError
from fl.metrics import prometheus
from fl.metrics.driver_relay import TextfileCollector
from fl.metrics.training import TrainingMetrics
from fl.rounds import RoundResult
from fl.settings import TrainSettings
from fl.train import train

ROUNDS = 20  # several seconds: Prometheus (every 2 s) scrapes the run in progress, not only its end


@pytest.fixture(scope="module")
def scraped_run(cluster_state: StateDir, cluster) -> tuple[Cluster, str]:
    """A short additive training run that Prometheus has scraped to the end."""
    loaded = Cluster.load(cluster_state.cluster_file)
    url = loaded.metrics.prometheus
    wait_for(url, 'up{job="driver"} == 1')
    train(str(cluster_state.cluster_file), TrainSettings(epochs=ROUNDS, verbose=0))
    # each run's counters start at zero and replace the last run's in the driver's textfile
    wait_for(url, f"sum(fl_rounds_completed_total) == {ROUNDS} and sum(fl_model_accuracy{{data='test'}}) > 0")
    wait_for(url, "count_over_time(sum(fl_rounds_completed_total)[1m:2s]) >= 3")
    return loaded, url


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        return response.read().decode()


def test_prometheus_scrapes_every_player_and_the_driver(scraped_run):
    cluster, url = scraped_run
    targets = {sample["metric"]["instance"]: sample["value"][1] for sample in query(url, "up")}
    expected = set(cluster.metrics.scrape_targets.values())
    assert set(targets) == expected and set(targets.values()) == {"1"}


def test_every_dashboard_query_returns_data_but_wire_bytes_on_the_local_backend(scraped_run):
    cluster, url = scraped_run
    empty = [(title, expr) for title, expr in dashboard_queries() if not has_data(query(url, expr))]
    # the players share the host's interfaces here: no per-player wire counter, and each player says why
    assert [expr for _, expr in empty] == [expr for _, expr in dashboard_queries() if "network_transmit" in expr]
    shared = query(url, 'fl_player_info{wire_bytes="shared_host"}')
    assert {sample["metric"]["player"] for sample in shared} == {p.name for p in cluster.players}


def test_round_metrics_count_the_run(scraped_run):
    cluster, url = scraped_run
    assert float(query(url, 'fl_round_duration_seconds_count{aggregation="additive"}')[0]["value"][1]) >= ROUNDS
    phases = {sample["metric"]["phase"] for sample in query(url, "fl_round_phase_duration_seconds_count > 0")}
    assert phases == {"local_training", "sharing", "aggregation", "reveal", "model_update"}
    expected = {sample["metric"]["player"]: float(sample["value"][1]) for sample in query(url, "fl_round_expected_sent_bytes")}
    assert set(expected) == {owner.name for owner in cluster.data_owners} and min(expected.values()) > 0
    participants = query(url, 'fl_round_participants{aggregation="additive"}')
    assert float(participants[0]["value"][1]) == len(cluster.data_owners)
    dropped = {sample["metric"]["owner"]: float(sample["value"][1]) for sample in query(url, "fl_owner_dropped_rounds_total")}
    assert dropped == {owner.name: 0.0 for owner in cluster.data_owners}


def test_metric_names_follow_prometheus_conventions(scraped_run):
    cluster, _ = scraped_run
    for address in cluster.metrics.scrape_targets.values():
        text = scrape(address)
        lint = subprocess.run([prometheus.binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0 and lint.stdout.strip() == "", f"{address}: {lint.stdout}{lint.stderr}"
        assert "# TYPE fl_" in text, f"{address} exports none of our metrics"


def test_a_failed_round_is_counted_and_outlives_the_run(tmp_path):
    textfile = tmp_path / "driver.prom"
    metrics = TrainingMetrics("additive", textfile)
    metrics.round_completed(RoundResult(0, {"loss": 1.5, "accuracy": 0.5}, 0.4, {"sharing": 0.1}, {}, {"data-owner-0": 64}))
    metrics.round_failed(1, FLError("player(s) not answering: data-owner-1"))
    del metrics  # the training process is gone; its file is what the driver exporter serves
    families = {family.name: family for family in TextfileCollector(textfile).collect()}
    samples = {family: family_obj.samples[0].value for family, family_obj in families.items() if family_obj.samples}
    assert samples["fl_rounds_failed"] == 1 and samples["fl_rounds_completed"] == 1
    assert samples["fl_driver_metrics_textfile_present"] == 1
    assert samples["fl_round_expected_sent_bytes"] == 64
