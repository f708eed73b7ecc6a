"""The dashboard page, opened in a real browser while a real training run goes on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from browser import Panels, rendered_dom, screenshot
from promql import wait_for

from fl.backends.local import StateDir
from fl.cluster import Cluster
from fl.metrics import dashboard

PANELS = json.loads(dashboard.PANELS.read_text())["panels"]


def test_the_dashboard_draws_every_panel_from_a_training_run_in_progress(cluster_state: StateDir, cluster, tmp_path):
    loaded = Cluster.load(cluster_state.cluster_file)
    page = dashboard.url(loaded.metrics.prometheus)
    fl = str(Path(sys.executable).with_name("fl"))
    training = subprocess.Popen(
        [fl, "train", "--state-dir", str(cluster_state.root), "--epochs", "5000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(loaded.metrics.prometheus, "sum(fl_rounds_completed_total) > 20", timeout=180)
        wait_for(loaded.metrics.prometheus, "count_over_time(fl_model_accuracy{data='train'}[1m]) >= 4")
        panels = Panels(rendered_dom(page)).panels
        picture = screenshot(page, tmp_path / "dashboard.png")
        assert training.poll() is None, "the run ended before the browser looked"
    finally:
        training.send_signal(signal.SIGTERM)
        _, errors = training.communicate(timeout=120)
    assert training.returncode == 130, errors
    print(f"screenshot: {picture}")

    assert list(panels) == [panel["title"] for panel in PANELS]
    assert {title: (p["series"] > 0 and p["points"] > 0, p["note"]) for title, p in panels.items()} == {
        panel["title"]: (True, "") for panel in PANELS
    }
    owners = sorted(player.name for player in loaded.data_owners)
    assert sorted(panels["Local training per data owner (the highest line is the straggler)"]["legend"]) == owners
    assert {"train additive"} <= set(panels["Accuracy over rounds"]["legend"])
    # the players share this host's interfaces: no wire series here, the protocol's bytes per owner
    assert sorted(panels["Bytes sent per round per player: wire vs protocol"]["legend"]) == [f"protocol {o}" for o in owners]
    assert sorted(panels["Players up"]["tiles"]) == sorted(
        f"{kind} {player.name}: 1" for kind in ("scraped", "TF server") for player in loaded.players
    )
