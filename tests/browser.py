"""A real browser for the tests: Debian's headless Chromium, its DOM after the page's scripts ran, and screenshots."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = "chromium-headless-shell"
# virtual time: the page's fetches and timers run to completion, however slow the machine is
FLAGS = ["--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=15000"]


def _chromium(*arguments: str) -> subprocess.CompletedProcess:
    executable = shutil.which(CHROMIUM)
    assert executable, f"no {CHROMIUM}: `make install` installs Debian's package"
    return subprocess.run([executable, *FLAGS, *arguments], capture_output=True, text=True, timeout=120, check=True)


def rendered_dom(url: str) -> str:
    return _chromium("--dump-dom", url).stdout


def screenshot(url: str, path: Path, size: str = "1400,2000") -> Path:
    _chromium(f"--window-size={size}", f"--screenshot={path}", url)
    assert path.stat().st_size > 0
    return path


class Panels(HTMLParser):
    """Each dashboard panel (a `section.panel`): its data attributes, legend entries, tiles and note."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.panels: dict[str, dict] = {}
        self._current: dict | None = None
        self._text_of: str | None = None
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "section" and "panel" in classes:
            self._current = {
                "series": int(attributes.get("data-series", 0)),
                "points": int(attributes.get("data-points", 0)),
                "legend": [],
                "tiles": [],
                "note": "",
            }
            self.panels[attributes["data-title"]] = self._current
        elif self._current is not None:
            self._text_of = {"legendtext": "legend", "tile": "tiles", "note": "note"}.get(next(iter(classes), ""))

    def handle_endtag(self, tag: str) -> None:
        self._text_of = None

    def handle_data(self, data: str) -> None:
        if self._current is None or self._text_of is None:
            return
        if self._text_of == "note":
            self._current["note"] += data
        else:
            self._current[self._text_of].append(data)
        self._text_of = None
