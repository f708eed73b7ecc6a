"""A run's report: one HTML file beside its JSON, its plots inside it, that opens offline in any browser.

Every `FederatedLearning` made while a `recording()` is open joins it as a round listener, so
`fl train` and a user's script under `fl run` are reported alike, one section per federated run.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl.errors import FLError, first_line
from fl.results import write_atomically
from fl.rounds import RoundResult

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #1d1d1f; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.written { color: #666; } img { max-width: 100%; } td, th { padding: 2px 10px; text-align: left; vertical-align: top; }
table { border-collapse: collapse; } tr:nth-child(even) { background: #f4f4f6; } .failed { color: #b00020; }
"""


@dataclass
class RunRecord:
    """One federated run's rounds, as a round listener keeps them."""

    title: str
    rounds: list[RoundResult] = field(default_factory=list)
    failure: str | None = None

    def round_completed(self, result: RoundResult) -> None:
        self.rounds.append(result)

    def round_failed(self, index: int, error: FLError) -> None:
        self.failure = f"round {index} failed: {first_line(str(error))}"


_recording: ContextVar[list[RunRecord] | None] = ContextVar("recording", default=None)


@contextmanager
def recording() -> Iterator[list[RunRecord]]:
    """The runs begun inside, in order."""
    records: list[RunRecord] = []
    token = _recording.set(records)
    try:
        yield records
    finally:
        _recording.reset(token)


def join(title: str) -> RunRecord | None:
    """A new run's record, when a recording is open."""
    records = _recording.get()
    if records is None:
        return None
    records.append(RunRecord(f"run {len(records) + 1}: {title}"))
    return records[-1]


def write_run_report(
    path: str | Path,
    title: str,
    records: Sequence[RunRecord],
    facts: Mapping[str, Any],
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """`facts`: how the run went, a table above the plots; `settings`: a table below them."""
    sections = [table(("", ""), [(name, _text(value)) for name, value in facts.items()])]
    if records:
        sections += [
            "<h2>Training metrics per round</h2>" + figure(_metric_plot(records)),
            "<h2>Round time</h2>" + figure(_round_time_plot(records)),
            "<h2>Mean time per phase</h2>" + figure(_bar_plot(records, "phase_seconds", "seconds per round")),
            "<h2>Each owner's local training (the slowest is the straggler)</h2>"
            + figure(_bar_plot(records, "owner_training_seconds", "mean seconds per round")),
            "<h2>Owners left out</h2>" + _dropped(records),
        ]
    else:
        sections.append("<p>No federated round ran.</p>")
    for record in records:
        if record.failure:
            sections.append(f'<p class="failed">{html.escape(record.title)}: {html.escape(record.failure)}</p>')
    if settings:
        sections.append("<h2>Settings</h2>" + table(("", ""), [(name, _text(value)) for name, value in settings.items()]))
    return write_atomically(path, page(title, sections))


def page(title: str, sections: Sequence[str]) -> str:
    written = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="written">written {written}</p>\n' + "\n".join(sections) + "\n</body></html>\n"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = f"<tr>{_cells('th', header)}</tr>" if any(header) else ""
    return "<table>" + head + "".join(f"<tr>{_cells('td', row)}</tr>" for row in rows) + "</table>"


def _cells(tag: str, values: Sequence[Any]) -> str:
    return "".join(f"<{tag}>{html.escape(str(value))}</{tag}>" for value in values)


def figure(png: bytes, alt: str = "plot") -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {_text(item)}" for key, item in value.items()) or "none"
    return str(value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ticker():
    import matplotlib.ticker

    return matplotlib.ticker


def _png(figure_) -> bytes:
    buffer = io.BytesIO()
    figure_.tight_layout()
    figure_.savefig(buffer, format="png", dpi=100)
    _pyplot().close(figure_)
    return buffer.getvalue()


def _metric_plot(records: Sequence[RunRecord]) -> bytes:
    """One panel per metric the rounds report (the loss, and whatever the model was compiled with)."""
    names = list(dict.fromkeys(name for record in records for result in record.rounds for name in result.metrics))
    plt = _pyplot()
    figure_, axes = plt.subplots(1, max(len(names), 1), figsize=(5 * max(len(names), 1), 3.6), squeeze=False)
    for panel, name in zip(axes[0], names):
        for record in records:
            points = [(r.index, r.metrics[name]) for r in record.rounds if name in r.metrics]
            if points:
                panel.plot(*zip(*points), label=record.title)
        panel.set(xlabel="round", title=name)
    _legend(axes[0][0], records)
    return _png(figure_)


def _round_time_plot(records: Sequence[RunRecord]) -> bytes:
    """Rounds that went on without an owner are marked: they ended at the deadline."""
    plt = _pyplot()
    figure_, axes = plt.subplots(figsize=(10, 3.6))
    for record in records:
        line = axes.plot([r.index for r in record.rounds], [r.seconds for r in record.rounds], label=record.title)[0]
        dropped = [(r.index, r.seconds) for r in record.rounds if r.dropped]
        if dropped:
            axes.plot(*zip(*dropped), "x", color=line.get_color(), label=f"{record.title}: owner left out")
    axes.set(xlabel="round", ylabel="seconds", yscale="log")  # round 0 also traces the stages
    ticker = _ticker()
    axes.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    axes.yaxis.set_minor_formatter(ticker.NullFormatter())
    _legend(axes, records)
    return _png(figure_)


def _bar_plot(records: Sequence[RunRecord], attribute: str, label: str) -> bytes:
    """Each run's mean per key over the rounds that have it, runs side by side."""
    keys = list(dict.fromkeys(key for record in records for result in record.rounds for key in getattr(result, attribute)))
    plt = _pyplot()
    figure_, axes = plt.subplots(figsize=(10, 0.5 + 0.35 * max(len(keys), 1) * len(records)))
    height = 0.8 / len(records)
    for offset, record in enumerate(records):
        means = []
        for key in keys:
            values = [getattr(r, attribute)[key] for r in record.rounds if key in getattr(r, attribute)]
            means.append(sum(values) / len(values) if values else 0.0)
        axes.barh([k + offset * height for k in range(len(keys))], means, height=height, label=record.title)
    axes.set_yticks([k + 0.4 - height / 2 for k in range(len(keys))], keys)
    axes.invert_yaxis()
    axes.set(xlabel=label)
    _legend(axes, records)
    return _png(figure_)


def _legend(axes, records: Sequence[RunRecord]) -> None:
    if len(records) > 1 or any(r.dropped for record in records for r in record.rounds):
        axes.legend(fontsize="small")


def _dropped(records: Sequence[RunRecord]) -> str:
    rows = [
        (record.title, result.index, ", ".join(f"{owner} ({reason})" for owner, reason in result.dropped.items()))
        for record in records
        for result in record.rounds
        if result.dropped
    ]
    return table(("run", "round", "owners left out"), rows) if rows else "<p>None: every round averaged every owner.</p>"
