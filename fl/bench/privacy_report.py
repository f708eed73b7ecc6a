"""The privacy benchmark's outputs: JSON, a Markdown table, the plot of accuracy against epsilon, one HTML page."""

from __future__ import annotations

from pathlib import Path

from fl.bench.privacy import gaps, summarize
from fl.bench.report import write_html
from fl.results import write_atomically, write_json

LABELS = {
    "none": "no DP",
    "distributed": "distributed DP (owners noise before sharing)",
    "central": "central DP (the model owner noises the sum)",
}


def markdown(rows: list[dict], settings: dict) -> str:
    summary = summarize(rows)
    lines = [
        f"Digits, {settings['owners']} data owners, {settings['aggregation']} aggregation, {settings['epochs']} rounds, "
        f"clip {settings['clip_norm']:g}, delta {settings['delta']:g}; owner-level epsilon, no sampling amplification. "
        f"Accuracy: mean and standard deviation over {settings['repeats']} runs of each setting.",
        "",
        "| privacy | noise multiplier | epsilon | test accuracy | stdev | runs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        z = "" if row["noise_multiplier"] is None else f"{row['noise_multiplier']:g}"
        epsilon = "" if row["epsilon"] is None else f"{row['epsilon']:.4g}"
        lines.append(
            f"| {row['privacy']} | {z} | {epsilon} | {row['mean_accuracy']:.4f} | {row['accuracy_stdev']:.4f} | {row['runs']} |"
        )
    lines += ["", "| noise multiplier | distributed minus central accuracy | its standard error |", "|---:|---:|---:|"]
    lines += [f"| {z:g} | {gap * 100:+.2f} points | {error * 100:.2f} points |" for z, (gap, error) in gaps(summary).items()]
    cost = {row["privacy"]: row for row in rows if row["kind"] == "cost"}
    if cost:
        plain, private = cost["none"], cost["distributed"]
        lines += [
            "",
            f"Round cost of distributed DP ({settings['aggregation']} aggregation stage alone, {plain['owners']} owners, "
            f"{plain['size']:,} parameters, median of {settings['cost_rounds']} calls): {plain['median_seconds']:.4f} s "
            f"without DP, {private['median_seconds']:.4f} s with it, "
            f"{private['median_seconds'] / plain['median_seconds']:.2f}x.",
        ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> Path:
    """Accuracy against epsilon: one line per privacy, no DP as a horizontal line."""
    from fl.report import _pyplot

    plt = _pyplot()
    summary = summarize(rows)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for privacy in ("distributed", "central"):
        points = sorted((r["epsilon"], r["mean_accuracy"], r["accuracy_stdev"]) for r in summary if r["privacy"] == privacy)
        if points:
            epsilons, means, spreads = zip(*points)
            axes.errorbar(epsilons, means, yerr=spreads, marker="o", capsize=3, label=LABELS[privacy])
    for row in summary:
        if row["privacy"] == "none":
            axes.axhline(row["mean_accuracy"], color="grey", linestyle="--", label=LABELS["none"])
    axes.set(xscale="log", xlabel="owner-level epsilon (log scale)", ylabel="test accuracy", title="Accuracy against epsilon")
    spent = sorted({row["epsilon"] for row in summary if row["epsilon"] is not None})
    axes.set_xticks(spent, [f"{epsilon:.3g}" for epsilon in spent])
    axes.minorticks_off()
    for row in summary:
        if row["privacy"] == "central":
            axes.annotate(
                f"z = {row['noise_multiplier']:g}", (row["epsilon"], row["mean_accuracy"]), (8, -14), "data", "offset points"
            )
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write(rows: list[dict], settings: dict, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    outputs = {"json": directory / "privacy.json", "markdown": directory / "privacy.md"}
    write_json(outputs["json"], {"settings": settings, "results": rows, "summary": summarize(rows)})
    write_atomically(outputs["markdown"], "# Distributed DP against central DP\n\n" + markdown(rows, settings))
    outputs["accuracy_vs_epsilon"] = plot(rows, directory / "accuracy_vs_epsilon.png")
    outputs["html"] = write_html(directory / "privacy.html", outputs)
    return outputs
