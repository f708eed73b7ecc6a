"""The benchmark's outputs: JSON, a Markdown table with secure/plaintext ratios, PNG plots, and all of it as one HTML page."""

from __future__ import annotations

from pathlib import Path

from fl.aggregation import fixedpoint
from fl.aggregation.plaintext import FLOAT32_BYTES
from fl.bench import keystream
from fl.bench.measure import FRAMEWORK, UPDATE_RANGE
from fl.bench.netem import PROFILES
from fl.bench.sweep import SweepResult
from fl.report import figure, page
from fl.results import write_atomically, write_json

# Each framework's plaintext aggregation, the baseline its secure ones are divided by.
PLAINTEXT = {"plaintext", "flower-fedavg"}

PEER_NOTES = {
    "flower": (
        "Flower runs its deployment engine on this host: a SuperLink, one SuperNode process per client, the "
        "ServerApp and ClientApps in subprocesses, all over loopback HTTP. A round spans the strategy's "
        "configure_fit to the end of aggregate_fit, so it includes sending the global model to every client "
        "and, for SecAgg+, its four message exchanges (setup, key sharing, masked vectors, unmasking); each "
        "exchange waits for the SuperNodes, which poll the SuperLink every 3 s when idle. SecAgg+ runs over "
        "the complete graph with an honest-majority threshold. Bytes: each client's replies in Flower's own "
        "serialization; minimum: 4 bytes per parameter (SecAgg+'s 2^32 ring, FedAvg's float32)."
    ),
}


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row plus, from the same run: its median latency over its own framework's plaintext aggregation
    at the same point and links, and (mutual TLS rows) over the same measurement with plaintext links."""

    def point(row: dict) -> tuple:
        return row["framework"], row["profile"], row["owners"], row["size"]

    baseline = {(*point(r), r["links"]): r["median_seconds"] for r in rows if r["aggregation"] in PLAINTEXT}
    untls = {(*point(r), r["aggregation"]): r["median_seconds"] for r in rows if r["links"] == "plaintext"}
    ratios = []
    for row in rows:
        without_tls = untls.get((*point(row), row["aggregation"])) if row["links"] != "plaintext" else None
        ratios.append(
            {
                **row,
                "latency_vs_plaintext": row["median_seconds"] / baseline[(*point(row), row["links"])],
                "latency_vs_plaintext_links": row["median_seconds"] / without_tls if without_tls else None,
            }
        )
    return ratios


def link_limits(rows: list[dict]) -> list[dict]:
    """On each rate-limited profile: one upload of a float32 update at the profile's rate, the floor of any round."""
    limits = {}
    for row in rows:
        rate = PROFILES[row["profile"]].rate_mbit if row["profile"] in PROFILES else None
        if rate and row["framework"] == FRAMEWORK:
            seconds = FLOAT32_BYTES * row["size"] * 8 / (rate * 1e6)
            limits[row["profile"], row["owners"], row["size"]] = {
                "profile": row["profile"],
                "owners": row["owners"],
                "size": row["size"],
                "rate_mbit": rate,
                "seconds": seconds,
            }
    return list(limits.values())


def markdown(rows: list[dict]) -> str:
    lines = [
        "| network | links | framework | aggregation | owners | parameters | median s | p95 s | vs plaintext "
        "| TLS cost | protocol B/owner | vs plaintext B | min B/owner | wire B/owner | wire B/server |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["profile"], r["size"], r["owners"], r["framework"], r["aggregation"], r["links"])):
        wire = "n/a (shared host)" if r["wire_bytes_per_owner"] is None else f"{r['wire_bytes_per_owner']:,.0f}"
        server_wire = "" if r["wire_bytes_per_server"] is None else f"{r['wire_bytes_per_server']:,.0f}"
        tls = "" if r["latency_vs_plaintext_links"] is None else f"{r['latency_vs_plaintext_links']:.2f}x"
        bytes_ratio = r["protocol_bytes_per_owner"] / (FLOAT32_BYTES * r["size"])
        lines.append(
            f"| {r['profile']} | {r['links']} | {r['framework']} | {r['aggregation']} | {r['owners']} | {r['size']:,} "
            f"| {r['median_seconds']:.4f} | {r['p95_seconds']:.4f} "
            f"| {r['latency_vs_plaintext']:.2f}x | {tls} | {r['protocol_bytes_per_owner']:,.0f} | {bytes_ratio:.2f}x "
            f"| {r['minimum_bytes_per_owner']:,} | {wire} | {server_wire} |"
        )
    for limit in link_limits(rows):
        lines.append(
            f"| {limit['profile']} | | | link limit ({limit['rate_mbit']:g} Mbit/s) | {limit['owners']} | {limit['size']:,} "
            f"| {limit['seconds']:.4f} | | | | {FLOAT32_BYTES * limit['size']:,} | 1.00x | | | |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], directory: Path) -> list[Path]:
    """On the first network profile and links measured (LAN unless the sweep skipped it)."""
    rows = [r for r in rows if (r["profile"], r["links"]) == (rows[0]["profile"], rows[0]["links"])]
    fewest = min(r["owners"] for r in rows)
    largest = max(r["size"] for r in rows)
    return [
        _line_plot(
            [r for r in rows if r["owners"] == fewest],
            ("size", "update size (parameters)"),
            ("median_seconds", "median round latency (s)"),
            f"Round latency vs update size ({fewest} data owners)",
            directory / "latency_vs_size.png",
            log_x=True,
        ),
        _line_plot(
            [r for r in rows if r["size"] == largest],
            ("owners", "data owners"),
            ("protocol_bytes_per_owner", "bytes sent per owner per round"),
            f"Bytes per owner vs owners ({largest:,} parameters)",
            directory / "bytes_vs_owners.png",
        ),
    ]


def _line_plot(rows: list[dict], x: tuple[str, str], y: tuple[str, str], title: str, path: Path, log_x: bool = False) -> Path:
    """One line per aggregation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name in sorted({r["aggregation"] for r in rows}):
        points = sorted((r[x[0]], r[y[0]]) for r in rows if r["aggregation"] == name)
        axes.plot(*zip(*points), marker="o", label=name)
    axes.set(xscale="log" if log_x else "linear", yscale="log", xlabel=x[1], ylabel=y[1], title=title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def peers_section(result: SweepResult, requested: list[str]) -> str:
    """What each peer is, or exactly why it did not run."""
    lines = ["## Peers", ""]
    for peer in requested:
        reason = result.unavailable_peers.get(peer)
        lines.append(f"- **{peer}**: " + (f"did not run: {reason}" if reason else PEER_NOTES[peer]))
    return "\n".join(lines) + "\n" if requested else ""


def write(result: SweepResult, settings: dict, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rows = with_ratios(result.rows)
    outputs = {"json": directory / "bench.json", "markdown": directory / "bench.md"}
    document = {
        "settings": settings,
        "results": rows,
        "link_limits": link_limits(rows),
        "unavailable_peers": result.unavailable_peers,
    }
    floor = ""
    if "additive" in settings["aggregations"]:
        document["keystream_bytes_per_second"] = measured = keystream.rates()
        owners, size = min(settings["owners"]), max(settings["sizes"])
        ring = fixedpoint.choose_ring(2 * UPDATE_RANGE, owners)
        floor = "\n" + keystream.markdown(measured, owners, size, ring.element_bytes)
    write_json(outputs["json"], document)
    write_atomically(
        outputs["markdown"],
        "# Secure aggregation vs plaintext\n\nOne aggregation round on updates already on the owners; "
        "latency over repeated rounds after warm-up. Minimum: the update once, in the protocol's encoding; "
        "'vs plaintext B': the protocol's bytes per owner over plaintext's 4 bytes a parameter; on a rate-limited "
        "network, the link limit is one upload of the update at that rate.\n\n"
        + markdown(rows)
        + floor
        + "\n"
        + peers_section(result, list(settings.get("peers", ()))),
    )
    for path in plot(rows, directory):
        outputs[path.stem] = path
    outputs["html"] = write_html(directory / "bench.html", outputs)
    return outputs


def write_html(path: Path, outputs: dict[str, Path]) -> Path:
    """bench.md and the plots in one page."""
    import markdown as markdown_package

    text = outputs["markdown"].read_text()
    title, _, body = text.partition("\n")
    plots = [figure(outputs[name].read_bytes(), name) for name in outputs if outputs[name].suffix == ".png"]
    return write_atomically(path, page(title.lstrip("# "), [markdown_package.markdown(body, extensions=["tables"]), *plots]))
