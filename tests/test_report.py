"""A run's HTML report from its rounds: what a reader finds in the one file."""

from pathlib import Path

from report_page import ReportPage

from fl import report
from fl.errors import FLError
from fl.rounds import RoundResult


def result(index: int, metrics: dict[str, float], dropped: dict[str, str] | None = None) -> RoundResult:
    return RoundResult(
        index,
        metrics,
        0.2 + 0.01 * index,
        {"local_training": 0.1, "aggregation": 0.05},
        owner_training_seconds={"data-owner-0": 0.1, "data-owner-1": 0.12},
        dropped=dropped or {},
    )


def test_every_run_begun_inside_a_recording_joins_it_in_order_and_none_outside():
    assert report.join("outside") is None
    with report.recording() as records:
        first, second = report.join("additive; uniform"), report.join("pond; uniform")
    assert records == [first, second] and [r.title for r in records] == ["run 1: additive; uniform", "run 2: pond; uniform"]
    assert report.join("after") is None


def test_the_report_holds_the_facts_one_panel_per_metric_the_left_out_owners_and_the_failed_round(tmp_path: Path):
    with report.recording() as records:
        additive, pond = report.join("additive"), report.join("pond")
    for index in range(5):
        left_out = {"data-owner-2": "missed the deadline"} if index == 3 else None
        additive.round_completed(result(index, {"loss": 1 / (index + 1), "accuracy": index / 5, "auc": 0.5}, left_out))
        pond.round_completed(result(index, {"loss": 2 / (index + 1)}))
    pond.round_failed(5, FLError("failed (deadline): compute-server-1\nthe rest of TF's message"))
    facts, settings = {"status": "failed", "rounds": 5, "dropped_owners": {}}, {"epochs": 5, "learning_rate": 0.3}
    path = report.write_run_report(tmp_path / "run.html", "fl train: a test", records, facts, settings)
    page = ReportPage(path)
    assert page.title == "fl train: a test"
    assert page.facts() == {"status": "failed", "rounds": "5", "dropped_owners": "none"}
    assert page.headings == [
        "Training metrics per round",
        "Round time",
        "Mean time per phase",
        "Each owner's local training (the slowest is the straggler)",
        "Owners left out",
        "Settings",
    ]
    metrics_plot, round_time, phases, owners = page.plots
    assert metrics_plot == (1500, 360)  # three metrics, 5 inches each at 100 dpi
    assert round_time == (1000, 360) and phases[0] == owners[0] == 1000
    assert page.tables[1] == [["run", "round", "owners left out"], ["run 1: additive", "3", "data-owner-2 (missed the deadline)"]]
    assert page.failures == ["run 2: pond: round 5 failed: failed (deadline): compute-server-1"]
    assert page.tables[-1] == [["epochs", "5"], ["learning_rate", "0.3"]]


def test_a_run_without_rounds_says_so_and_draws_nothing(tmp_path: Path):
    page = ReportPage(report.write_run_report(tmp_path / "run.html", "fl run probe.py", [], {"outcome": "exit 0"}))
    assert page.plots == [] and "No federated round ran." in page.paragraphs
