"""Asking a real Prometheus server, and the queries the dashboards in dashboards/ make."""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from pathlib import Path

DASHBOARDS = Path(__file__).resolve().parents[1] / "dashboards"
# what Grafana would substitute for its variables on a dashboard showing the last minutes
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}


def query(prometheus: str, expr: str, at: float | None = None) -> list[dict]:
    """An instant query's result vector."""
    parameters = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
    with urllib.request.urlopen(f"{prometheus}/api/v1/query?{urllib.parse.urlencode(parameters)}", timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def has_data(result: list[dict]) -> bool:
    """At least one series with a number (a rate over an idle window is NaN: nothing to plot)."""
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def value(prometheus: str, expr: str, at: float | None = None) -> float:
    result = query(prometheus, expr, at)
    assert len(result) == 1, f"{expr} gave {len(result)} series"
    return float(result[0]["value"][1])


def wait_for(prometheus: str, expr: str, timeout: float = 60) -> list[dict]:
    """Poll until `expr` returns data (scrapes come every few seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = query(prometheus, expr)
            if result:
                return result
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"Prometheus at {prometheus} returned nothing for {expr} within {timeout:.0f}s")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables filled in) for every target of every dashboard."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for variable, substitute in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, substitute)
                queries.append((panel["title"], expr))
    return queries
