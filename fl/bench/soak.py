"""`make soak`: hundreds of rounds on one cluster, a player killed and restarted every few dozen rounds.

It answers what a short test cannot: does a player's memory grow with the rounds (TF never releases a
function registered on a worker, so anything traced per round would pile up there), and does a fault
cost only the rounds it hits? `run` brings up a cluster of its own, runs `drive` where the driver runs,
kills and restarts one player after every `--fault-every` completed rounds (data owners and compute
servers in turn; the model owner holds the model, which lives in its memory), and reads each player's
resident memory from the cluster's Prometheus afterwards. A report goes to `--out` as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from fl import backends
from fl.aggregation.registry import registration
from fl.backends import Backend, UpSettings
from fl.cluster import COMPUTE_SERVER, DATA_OWNER, Cluster
from fl.errors import FLError
from fl.results import write_json

RETRY_SECONDS = 2.0
WARMUP_ROUNDS = 50
MAX_GROWTH = 0.10  # the bound on a player's memory growth after warm-up


def drive(config: str, rounds: int, aggregation: str, round_timeout: float) -> None:
    """Where the driver runs: round after round until `rounds` completed, one JSON line per attempt."""
    import fl
    from fl.aggregation.registry import make_aggregation
    from fl.train import build_classifier

    cluster = fl.connect(config)
    train_data, _ = fl.owner_sources(cluster)
    rounds_policy = fl.RoundPolicy(round_timeout)
    federated = fl.FederatedLearning(cluster.model_owner, make_aggregation(aggregation, cluster), rounds=rounds_policy)
    with federated:
        model = build_classifier(cluster.dataset.feature_shape, cluster.dataset.num_classes, 64, 0.3)
    while federated.completed_rounds < rounds:
        index = federated.completed_rounds
        try:
            model.fit(train_data, epochs=1, verbose=0)
            print(json.dumps({"round": index, "completed": True, "at": time.time()}), flush=True)
        except FLError as error:  # the next fit re-announces the cluster, once the player is back
            print(json.dumps({"round": index, "completed": False, "at": time.time(), "error": str(error)}), flush=True)
            time.sleep(RETRY_SECONDS)


def run(backend: Backend, owners: int, rounds: int, fault_every: int, aggregation: str, round_timeout: float) -> dict:
    cluster = backend.up(UpSettings(owners))
    victims = _victims(cluster, aggregation)
    command = [
        "python" if not backend.driver_is_this_host else sys.executable,
        *("-m", "fl.bench.soak", "drive", "--config", backend.driver_cluster_file),
        *("--rounds", str(rounds), "--aggregation", aggregation, "--round-timeout", str(round_timeout)),
    ]
    started = time.time()
    attempts, faults = [], []
    with backend.exec(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            attempt = json.loads(line)
            attempts.append(attempt)
            completed = sum(a["completed"] for a in attempts)
            if attempt["completed"] and completed % fault_every == 0 and completed < rounds:
                victim = victims[len(faults) % len(victims)]
                killed = time.time()
                backend.restart_player(victim)
                faults.append({"after_round": attempt["round"], "player": victim, "killed_at": killed, "back_at": time.time()})
                print(f"soak: round {attempt['round']} done; restarted {victim} in {time.time() - killed:.0f}s", flush=True)
        errors = process.stderr.read()
    if process.returncode != 0:
        raise FLError(f"the soak's driver failed: {errors.strip().splitlines()[-1] if errors.strip() else 'no output'}")
    memory = _resident_memory(cluster, started, time.time())
    return _report(attempts, faults, memory, rounds, fault_every, aggregation, owners)


def _victims(cluster: Cluster, aggregation: str) -> list[str]:
    """Players to restart in turn: data owners, and the compute servers when the aggregation uses them."""
    owners = [p.name for p in cluster.players if p.role == DATA_OWNER]
    uses_servers = registration(aggregation).compute_servers > 0
    servers = [p.name for p in cluster.players if p.role == COMPUTE_SERVER] if uses_servers else []
    turns = [name for pair in zip(owners, servers) for name in pair] if servers else owners
    return turns + [name for name in owners + servers if name not in turns]


def _resident_memory(cluster: Cluster, start: float, end: float) -> dict[str, list[tuple[float, float]]]:
    """Each player's TF server process RSS over the run, as Prometheus scraped it from the player's exporter."""
    query = urllib.parse.urlencode(
        {"query": 'process_resident_memory_bytes{job="players"}', "start": start, "end": end, "step": "5"}
    )
    with urllib.request.urlopen(f"{cluster.metrics.prometheus}/api/v1/query_range?{query}", timeout=30) as response:
        series = json.load(response)["data"]["result"]
    return {s["metric"]["player"]: [(float(t), float(v)) for t, v in s["values"]] for s in series}


def _report(attempts, faults, memory, rounds, fault_every, aggregation, owners) -> dict:
    """Failed attempts, each within a restart's window or not; memory growth per player over each of its lives
    that outlasted the warm-up."""
    completed_at = {a["round"]: a["at"] for a in attempts if a["completed"]}
    failed = [a for a in attempts if not a["completed"]]
    # a restart's window: from the kill to the first round completed after the player was back
    back = [min((at for at in completed_at.values() if at >= f["back_at"]), default=float("inf")) for f in faults]
    windows = [(f["killed_at"], end) for f, end in zip(faults, back)]
    explained = [a for a in failed if any(begin <= a["at"] <= end for begin, end in windows)]
    lives = []
    for player, samples in sorted(memory.items()):
        restarts = [f["back_at"] for f in faults if f["player"] == player]
        bounds = [samples[0][0], *restarts, samples[-1][0] + 1]
        for begin, end in itertools.pairwise(bounds):
            life = [(t, rss) for t, rss in samples if begin <= t < end]
            rounds_in = sorted(r for r, at in completed_at.items() if begin <= at < end)
            if len(rounds_in) <= 2 * WARMUP_ROUNDS or not life:
                continue
            warm = completed_at[rounds_in[WARMUP_ROUNDS]]
            after = [rss for t, rss in life if t >= warm]
            if after:
                lives.append(
                    {
                        "player": player,
                        "rounds": len(rounds_in),
                        "rss_after_warmup_bytes": after[0],
                        "rss_at_end_bytes": after[-1],
                        "growth": after[-1] / after[0] - 1,
                    }
                )
    return {
        "aggregation": aggregation,
        "owners": owners,
        "rounds": rounds,
        "fault_every": fault_every,
        "faults": faults,
        "failed_attempts": len(failed),
        "failed": failed,
        "failed_attempts_outside_faults": [a for a in failed if a not in explained],
        "rounds_failed": sorted({a["round"] for a in failed}),
        "median_round_seconds": statistics.median(
            later - earlier for earlier, later in itertools.pairwise(sorted(completed_at.values()))
        ),
        "memory": lives,
        "max_growth": max((life["growth"] for life in lives), default=None),
        "memory_bound_held": all(life["growth"] <= MAX_GROWTH for life in lives),
    }


def markdown(report: dict) -> str:
    lines = [
        f"# Soak: {report['rounds']} {report['aggregation']} rounds, {report['owners']} owners, "
        f"a player restarted every {report['fault_every']}",
        "",
        f"Restarts: {len(report['faults'])}; failed attempts {report['failed_attempts']} "
        f"(outside a fault: {len(report['failed_attempts_outside_faults'])}); rounds that failed at least once: "
        f"{', '.join(map(str, report['rounds_failed'])) or 'none'}; median round {report['median_round_seconds']:.3f} s.",
        "",
        f"| player | rounds in this life | RSS after {WARMUP_ROUNDS} rounds | RSS at end | growth |",
        "|---|---:|---:|---:|---:|",
    ]
    for life in report["memory"]:
        lines.append(
            f"| {life['player']} | {life['rounds']} | {life['rss_after_warmup_bytes'] / 2**20:.1f} MiB "
            f"| {life['rss_at_end_bytes'] / 2**20:.1f} MiB | {life['growth']:+.1%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fl.bench.soak", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    driving = commands.add_parser("drive", help="the driver's loop (started by `run`)")
    driving.add_argument("--config", required=True)
    soaking = commands.add_parser("run", help="bring up a cluster, soak it, report, bring it down")
    soaking.add_argument("--backend", choices=["docker", "local"], default="docker")
    soaking.add_argument("--owners", type=int, default=3)
    soaking.add_argument("--fault-every", type=int, default=50, help="restart a player after every this many rounds")
    soaking.add_argument("--out", type=Path, default=Path("results/soak"))
    for command in (driving, soaking):
        command.add_argument("--rounds", type=int, default=500)
        command.add_argument("--aggregation", default="pond")
        command.add_argument("--round-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.command == "drive":
        drive(args.config, args.rounds, args.aggregation, args.round_timeout)
        return
    with tempfile.TemporaryDirectory(prefix="fl-soak-") as state_dir:
        backend = backends.named(args.backend, Path(state_dir))
        try:
            report = run(backend, args.owners, args.rounds, args.fault_every, args.aggregation, args.round_timeout)
        finally:
            backend.down(volumes=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "soak.json", report)
    (args.out / "soak.md").write_text(markdown(report))
    print(markdown(report))
    problems = []
    if report["failed_attempts_outside_faults"]:
        problems.append("rounds failed away from any restart")
    if not report["memory_bound_held"]:
        problems.append(f"a player's memory grew more than {MAX_GROWTH:.0%} after warm-up")
    if problems:
        sys.exit("soak: " + "; ".join(problems) + f" (see {args.out / 'soak.md'})")


if __name__ == "__main__":
    main()
