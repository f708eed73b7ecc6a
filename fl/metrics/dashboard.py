"""The dashboard page: Prometheus serves it with its own API (`--web.user-assets`, at /user/), so it needs no
server, image or registry of its own; the panels are those of the Grafana dashboard in dashboards/."""

from __future__ import annotations

import shutil
from pathlib import Path

from fl.errors import FLError

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
PAGE = DASHBOARDS / "page"
PANELS = DASHBOARDS / "fl-testbed.json"
CHARTS = "plotly.min.js"  # plotly.js, as the plotly package of PyPI ships it
ASSETS_IN_CONTAINER = "/etc/prometheus/dashboard"
PATH = "/user/"


def write_assets(directory: Path) -> Path:
    """The page, its panels and plotly.js in `directory`, which Prometheus then serves."""
    try:
        import plotly
    except ImportError:
        raise FLError("the dashboard draws with plotly.js from the plotly package: run `make install`") from None
    directory.mkdir(parents=True, exist_ok=True)
    for source in [*PAGE.iterdir(), PANELS, Path(plotly.__file__).parent / "package_data" / CHARTS]:
        shutil.copyfile(source, directory / source.name)
    return directory


def url(prometheus: str) -> str:
    """The page's address, given Prometheus's."""
    return prometheus.rstrip("/") + PATH
