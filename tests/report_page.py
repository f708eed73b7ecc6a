"""A run's HTML report as a reader finds it: its title, tables, embedded plots (as PNG sizes) and failure lines."""

from __future__ import annotations

import base64
import struct
from html.parser import HTMLParser
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ReportPage(HTMLParser):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.title = ""
        self.headings: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.plots: list[tuple[int, int]] = []  # each embedded PNG's width and height, in pixels
        self.failures: list[str] = []
        self.paragraphs: list[str] = []
        self._open: str | None = None
        self.feed(path.read_text())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
        elif tag == "img":
            self.plots.append(png_size(attributes["src"]))
        self._open = "failure" if "failed" in (attributes.get("class") or "") else tag

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open == "title":
            self.title += data
        elif self._open == "h2":
            self.headings.append(data)
        elif self._open in ("td", "th"):
            self.tables[-1][-1][-1] += data
        elif self._open == "failure":
            self.failures.append(data)
        elif self._open == "p":
            self.paragraphs.append(data)

    def facts(self) -> dict[str, str]:
        """The first table: the run's settings and outcome."""
        return {row[0]: row[1] for row in self.tables[0]}


def png_size(source: str) -> tuple[int, int]:
    prefix = "data:image/png;base64,"
    assert source.startswith(prefix), source[:40]
    png = base64.b64decode(source[len(prefix) :])
    assert png.startswith(PNG_SIGNATURE)
    return struct.unpack(">II", png[16:24])  # the IHDR chunk's width and height
