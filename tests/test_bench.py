"""A tiny benchmark sweep on its own real cluster, and Flower on its own real SuperLink and SuperNodes."""

import json
from dataclasses import asdict, replace

import pytest
from dp_accounting import GaussianDpEvent, SelfComposedDpEvent
from dp_accounting.rdp import RdpAccountant
from report_page import ReportPage

from fl.aggregation.base import WEIGHT_SLOTS
from fl.backends.local import LocalBackend
from fl.bench import flower, privacy, privacy_report, report, sweep
from fl.errors import FLError
from fl.privacy.accountant import ORDERS

TINY = sweep.SweepSettings(owners=(3,), sizes=(1_000, 20_000), aggregations=("additive", "plaintext"), rounds=2)


@pytest.mark.cluster
def test_tiny_sweep_writes_json_table_and_plots_and_says_why_a_peer_did_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(flower, "VENV", tmp_path / "no-flower-here")
    settings = replace(TINY, peers=("flower",))
    result = sweep.run(settings, verbose=0)
    assert "Flower is not installed" in result.unavailable_peers["flower"]
    outputs = report.write(result, asdict(settings), tmp_path)
    results = json.loads(outputs["json"].read_text())["results"]
    assert {(r["aggregation"], r["size"]) for r in results} == {(a, s) for a in TINY.aggregations for s in TINY.sizes}
    for row in results:
        assert 0 < row["median_seconds"] <= row["p95_seconds"]
        assert row["protocol_bytes_per_owner"] >= row["minimum_bytes_per_owner"] > 0
        assert row["wire_bytes_per_owner"] is None  # the local backend shares the host's interfaces
    additive = next(r for r in results if r["aggregation"] == "additive" and r["size"] == 20_000)
    baseline = next(r for r in results if r["aggregation"] == "plaintext" and r["size"] == 20_000)
    assert additive["latency_vs_plaintext"] == pytest.approx(additive["median_seconds"] / baseline["median_seconds"])
    # its masked vector (the update and its weight) in a 32-bit ring and one seed per pair of owners (2, 1 and 0
    # made): plaintext's 4 bytes a parameter
    assert additive["protocol_bytes_per_owner"] == 4 * (20_000 + WEIGHT_SLOTS) + 32
    assert additive["plaintext_bytes_per_owner"] == 4 * 20_000
    table = outputs["markdown"].read_text()
    assert "| 4,000,036 | 1.00x |" not in table and "| 80,036 | 1.00x |" in table
    assert table.count("| fl-testbed | additive |") == 2 and table.count("| fl-testbed | plaintext |") == 2
    rates = json.loads(outputs["json"].read_text())["keystream_bytes_per_second"]
    assert set(rates) == {"fl ChaCha20 op (OpenSSL), folded", "OpenSSL AES-128-CTR", "OpenSSL ChaCha20"}
    assert all(rate > 1e7 for rate in rates.values())
    assert "expands 160,000 bytes of keystream on each owner" in table  # one mask per peer, 20,000 x 4 B each
    assert f"**flower**: did not run: Flower is not installed: {tmp_path / 'no-flower-here'} is missing" in table
    for name in ("latency_vs_size", "bytes_vs_owners"):
        assert outputs[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = ReportPage(outputs["html"])  # the table, the keystream floor and both plots in one file
    assert page.title == "Secure aggregation vs plaintext" and page.plots == [(770, 495), (770, 495)]
    rows = [row for row in page.tables[0] if row[2:4] == ["fl-testbed", "additive"]]
    assert [row[5] for row in rows] == ["1,000", "20,000"] and rows[1][10] == "80,036"


@pytest.mark.cluster
def test_flower_secagg_and_fedavg_rounds_against_the_true_mean(tmp_path):
    """Each round's aggregate is checked against the clients' mean inside `flower.measure`, which raises if off."""
    size = 5_000
    rows = [
        {**flower.measure(name, 3, size, rounds=1, warmup=0), "profile": "lan", "links": "plaintext"}
        for name in flower.AGGREGATIONS
    ]
    secagg, fedavg = report.with_ratios(rows)
    assert secagg["framework"] == fedavg["framework"] == f"flower {flower.version()}"
    assert secagg["latency_vs_plaintext"] == pytest.approx(secagg["median_seconds"] / fedavg["median_seconds"])
    # FedAvg sends float32 and a little framing; SecAgg+ sends its masked ring vector and key material
    assert 4 * size < fedavg["protocol_bytes_per_owner"] < 4 * size + 4_000
    assert secagg["protocol_bytes_per_owner"] > fedavg["protocol_bytes_per_owner"]
    assert secagg["minimum_bytes_per_owner"] == fedavg["minimum_bytes_per_owner"] == 4 * size


def test_tls_cost_divides_each_mutual_tls_row_by_the_same_measurement_over_plaintext_links():
    def row(aggregation: str, links: str, seconds: float) -> dict:
        return {
            "framework": "fl-testbed",
            "profile": "10mbit",
            "owners": 3,
            "size": 10**6,
            "aggregation": aggregation,
            "links": links,
            "median_seconds": seconds,
        }

    rows = report.with_ratios(
        [
            row("plaintext", "plaintext", 4.0),
            row("additive", "plaintext", 6.0),
            row("plaintext", "mutual_tls", 4.2),
            row("additive", "mutual_tls", 6.6),
        ]
    )
    ratios = {(r["aggregation"], r["links"]): (r["latency_vs_plaintext"], r["latency_vs_plaintext_links"]) for r in rows}
    assert ratios == {
        ("plaintext", "plaintext"): (1.0, None),
        ("additive", "plaintext"): (1.5, None),
        ("plaintext", "mutual_tls"): (1.0, 4.2 / 4.0),
        ("additive", "mutual_tls"): (6.6 / 4.2, 6.6 / 6.0),
    }


def test_a_rate_limited_profile_gets_a_link_limit_row_of_one_float32_upload():
    row = {"framework": "fl-testbed", "profile": "10mbit", "owners": 3, "size": 10**6, "aggregation": "additive"}
    assert report.link_limits([row, {**row, "aggregation": "plaintext"}, {**row, "profile": "lan"}]) == [
        {"profile": "10mbit", "owners": 3, "size": 10**6, "rate_mbit": 10.0, "seconds": 3.2}
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"profiles": ("lan", "10mbit")}, "network profiles need each player's own interface"),
        ({"tls": (True, False)}, "--tls needs"),
    ],
)
def test_a_sweep_the_local_backend_cannot_run_is_refused_before_any_cluster_starts(change, message, monkeypatch):
    monkeypatch.setattr(LocalBackend, "up", _must_not_start)
    with pytest.raises(FLError, match=message):
        sweep.run(replace(TINY, peers=(), **change), verbose=0)


def _must_not_start(*args, **kwargs):
    raise AssertionError("a cluster was started for a sweep that was going to be refused")


@pytest.mark.cluster
def test_the_privacy_bench_trains_each_setting_and_plots_accuracy_against_the_epsilon_it_spent(tmp_path):
    settings = privacy.PrivacyBenchSettings(owners=3, noise_multipliers=(1.0,), epochs=2, repeats=2, cost_size=20_000)
    rows = privacy.run(settings, verbose=0)
    accuracy = [row for row in rows if row["kind"] == "accuracy"]
    assert [(row["privacy"], row["seed"]) for row in accuracy] == [
        (privacy_mode, seed) for privacy_mode in ("none", "distributed", "central") for seed in (0, 1)
    ]
    library = RdpAccountant(ORDERS)
    library.compose(SelfComposedDpEvent(GaussianDpEvent(1.0), 2))
    spent = {mode: {row["epsilon"] for row in accuracy if row["privacy"] == mode} for mode in ("none", "distributed", "central")}
    assert spent["none"] == {None} and len(spent["central"]) == len(spent["distributed"]) == 1
    (central,), (distributed,) = spent["central"], spent["distributed"]
    assert central == pytest.approx(library.get_epsilon(1e-5), rel=1e-9)
    assert central < distributed < 1.01 * central
    assert all(row["rounds"] == 2 and 0 <= row["test_accuracy"] <= 1 for row in accuracy)
    cost = {row["privacy"]: row for row in rows if row["kind"] == "cost"}
    assert set(cost) == {"none", "distributed"} and all(row["median_seconds"] > 0 for row in cost.values())
    outputs = privacy_report.write(rows, asdict(settings), tmp_path)
    assert outputs["accuracy_vs_epsilon"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = ReportPage(outputs["html"])
    assert page.title == "Distributed DP against central DP" and page.plots == [(770, 495)]
    assert [row[0] for row in page.tables[0][1:]] == ["none", "distributed", "central"]
    assert page.tables[1][1][0] == "1"  # the gap at noise multiplier 1


def test_the_gap_between_distributed_and_central_dp_comes_with_its_standard_error():
    summary = [
        {"privacy": "none", "noise_multiplier": None, "mean_accuracy": 0.95, "accuracy_stdev": 0.01, "runs": 4},
        {"privacy": "distributed", "noise_multiplier": 0.5, "mean_accuracy": 0.86, "accuracy_stdev": 0.03, "runs": 4},
        {"privacy": "central", "noise_multiplier": 0.5, "mean_accuracy": 0.85, "accuracy_stdev": 0.04, "runs": 4},
    ]
    ((z, (gap, error)),) = privacy.gaps(summary).items()
    assert z == 0.5 and gap == pytest.approx(0.01) and error == pytest.approx(0.025)  # sqrt(0.03^2/4 + 0.04^2/4)
