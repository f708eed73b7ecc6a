"""The `fl` command: run players, bring a cluster up or down, split data, train."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from fl import settings as train_settings
from fl.aggregation.registry import AGGREGATIONS
from fl.backends import BACKENDS
from fl.backends.local import DEFAULT_STATE_DIR
from fl.errors import FLError
from fl.policies import PARTITIONS

DEFAULT_OWNERS = 3
SWARM_IMAGES = ("fl-testbed-player", "fl-testbed-sidecar")  # what a node runs for the testbed
KERAS_SUFFIX = ".keras"  # what Keras 2.12 saves in its own format


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # what `fl train` forwards to the driver container
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args) or 0
    except FLError as error:
        print(f"fl {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fl {args.command}: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    player = commands.add_parser("player", help="run one player's TF server")
    player.add_argument("name")
    player.add_argument("--config", required=True, help="cluster file")
    _insecure_flag(player)
    player.set_defaults(run=_player)

    relay = commands.add_parser("driver-metrics", help="serve the driver's training metrics to Prometheus")
    relay.add_argument("--config", required=True, help="cluster file")
    relay.set_defaults(run=_driver_metrics)

    up = commands.add_parser("up", help="start a cluster: model owner, N data owners, 3 compute servers")
    up.add_argument("--backend", choices=[*BACKENDS, "auto"], default="auto", help="auto: docker if an engine answers")
    up.add_argument("--owners", type=int, default=DEFAULT_OWNERS)
    up.add_argument("--dataset", default="digits", help="the data set split among the owners (simulation)")
    _partition_flags(up)
    up.add_argument(
        "--data",
        type=Path,
        help="the owners' own files instead of a split: DIR/<player name>/ for every data owner and the model owner, "
        "each visible to its own player only (as <its data dir>/own)",
    )
    up.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mutual TLS on every link, through a sidecar per player (docker: on by default; local: not available)",
    )
    _state_flag(up)
    _insecure_flag(up)
    up.set_defaults(run=_up)

    certs = _cluster_command(commands, "certs", _certs, "show the cluster's certificates; --rotate issues a new CA and keys")
    certs.add_argument("--rotate", action="store_true", help="new CA, key and certificate for everyone; reloads running sidecars")

    render = commands.add_parser("render", help="write the docker backend's Compose project without starting it")
    render.add_argument("--owners", type=int, default=DEFAULT_OWNERS)
    render.add_argument("--dataset", default="digits", help="the data set each owner prepares (simulation)")
    render.add_argument("--directory", type=Path, default=Path("compose"))
    render.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True, help="mutual TLS through sidecars")
    render.set_defaults(run=_render)

    _cluster_command(commands, "status", _status, "show each player of the state directory's cluster")
    down = _cluster_command(commands, "down", _down, "stop the state directory's cluster (its stored data stays)")
    down.add_argument("--volumes", action="store_true", help="also remove the owners' shards and Prometheus's history")
    logs = _cluster_command(commands, "logs", _logs, "the last lines of every player's log")
    logs.add_argument("--lines", type=int, default=20)

    split = commands.add_parser("split", help="SIMULATION ONLY: split a data set among the data owners")
    split.add_argument("--dataset", default="digits", help="digits, diabetes (offline), mnist (download) or npz:PATH")
    _partition_flags(split)
    split.add_argument("--only", help="write only this player's file (each host prepares its own)")
    split.add_argument("--config", type=Path, default=DEFAULT_STATE_DIR / "cluster.json", help="cluster file")
    split.set_defaults(run=_split)

    bench = commands.add_parser("bench", help="latency and bytes of each aggregation vs plaintext; what DP costs")
    bench.add_argument(
        "--mode",
        choices=["quick", "full", "privacy"],
        default="quick",
        help="quick: a few minutes on 2 cores; privacy: accuracy against epsilon, distributed next to central DP",
    )
    bench.add_argument("--backend", choices=["local", "docker"], help="docker: wire bytes, network profiles (default local)")
    bench.add_argument("--profiles", nargs="+", help="docker only: lan (default), wan, slow-wan (tc netem)")
    bench.add_argument("--tls", nargs="+", choices=["on", "off"], help="docker only: links with and/or without mutual TLS")
    bench.add_argument("--aggregations", nargs="+", choices=AGGREGATIONS, help="narrow the sweep to these aggregations")
    bench.add_argument("--owners", type=int, nargs="+", help="override the mode's numbers of data owners")
    bench.add_argument("--sizes", type=int, nargs="+", help="override the mode's update sizes")
    bench.add_argument("--peers", nargs="+", choices=["flower", "none"], help="frameworks to compare with (default flower)")
    bench.add_argument("--peer-owners", type=int, nargs="+", help="override the mode's clients for the peers")
    bench.add_argument("--peer-sizes", type=int, nargs="+", help="override the mode's update sizes for the peers")
    bench.add_argument("--noise-multipliers", type=float, nargs="+", help="privacy only: the DP noise multipliers to train at")
    bench.add_argument("--repeats", type=int, help="privacy only: training runs of each setting (default 5)")
    bench.add_argument("--out", type=Path, default=Path("results/bench"))
    bench.set_defaults(run=_bench)

    kit = commands.add_parser("kit", help="one directory per party (its Compose file, key, CA certificate, cluster file)")
    kit.add_argument("--out", type=Path, required=True, help="a new directory: one kit per party in it, the CA's key beside")
    kit.add_argument("--owners", type=int, default=DEFAULT_OWNERS)
    kit.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="NAME=HOST[:PORT]",
        help="where the other parties reach this party's sidecar (port default 7443); once per player",
    )
    kit.add_argument("--addresses", type=Path, help="a file of NAME=HOST[:PORT] lines, instead of or beside --address")
    kit.add_argument("--dataset", default="digits", help="the public data set each owner splits for itself (simulation)")
    _partition_flags(kit)
    kit.set_defaults(run=_kit)

    probe = commands.add_parser("probe", help="which players of a cluster file answer from here, as JSON (name -> bool)")
    probe.add_argument("--config", type=Path, required=True, help="cluster file")
    probe.set_defaults(run=_probe)

    swarm = commands.add_parser("swarm", help="Docker-in-Docker nodes joined to a swarm this machine's engine manages")
    actions = swarm.add_subparsers(dest="action", required=True)
    swarm_up = actions.add_parser("up", help="start N nodes, join them as workers labelled fl.testbed, load images")
    swarm_up.add_argument("--nodes", type=int, default=3)
    swarm_up.add_argument(
        "--load",
        nargs="*",
        default=list(SWARM_IMAGES),
        help=f"images to load into every node (default: {' '.join(SWARM_IMAGES)}; none: --load)",
    )
    swarm_up.set_defaults(run=_swarm_up)
    actions.add_parser("down", help="remove the nodes, and leave the swarm if `fl swarm up` started it").set_defaults(
        run=_swarm_down
    )
    actions.add_parser("status", help="each node and its state in the swarm").set_defaults(run=_swarm_status)

    train = commands.add_parser("train", help="federated training on the running cluster")
    for flag, options in train_settings.flags():
        train.add_argument(flag, **options)
    train.add_argument("--json", help="write a JSON summary here (also when the run fails or is interrupted)")
    train.add_argument(
        "--save",
        metavar="PATH",
        type=_keras_path,
        help="write the final model in Keras format on the model owner (relative to its data directory: "
        "/data in its container volume)",
    )
    train.add_argument(
        "--config", type=Path, help="cluster file (default: the state directory's; on docker the driver's own, not settable)"
    )
    _state_flag(train)
    _insecure_flag(train)
    train.set_defaults(run=_train)

    run = commands.add_parser(
        "run", help="run your own script as the driver of the state directory's cluster (on docker: in the driver container)"
    )
    run.add_argument("script", type=Path, help="a Python script; it connects with fl.connect() and writes to fl.results_dir()")
    run.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script as sys.argv[1:]")
    run.add_argument("--config", type=Path, help=argparse.SUPPRESS)  # the driver container's own cluster file
    _state_flag(run)
    _insecure_flag(run)
    run.set_defaults(run=_run)
    return parser


def _partition_flags(command: argparse.ArgumentParser) -> None:
    """SIMULATION ONLY: how a public data set is split among the owners."""
    command.add_argument("--partition", choices=PARTITIONS, default="iid", help="iid, or label skew by a Dirichlet draw")
    command.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration: smaller, more skew (dirichlet only)")
    command.add_argument("--seed", type=int, default=0, help="seeds the split")


def _cluster_command(commands, name: str, run, text: str) -> argparse.ArgumentParser:
    """A command on the cluster of a state directory."""
    command = commands.add_parser(name, help=text)
    _state_flag(command)
    command.set_defaults(run=run)
    return command


def _state_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="identifies the cluster (either backend): its files live here"
    )


def _insecure_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--insecure-randomness",
        action="store_true",
        help="EXPERIMENTS ONLY: run secure protocols on tf.random when the secure-random op is missing",
    )


def _player(args) -> None:
    from fl.player import serve

    serve(args.name, str(args.config), args.insecure_randomness)


def _driver_metrics(args) -> None:
    from fl.cluster import Cluster
    from fl.metrics import driver_relay

    driver_relay.serve(Cluster.load(args.config))


def _up(args) -> None:
    from fl import backends
    from fl.metrics import dashboard

    backend = backends.named(args.backend, args.state_dir)
    if args.backend == "auto":
        print("backend: {} ({})".format(*backends.automatic_choice()))
    data = backends.DataSettings(args.dataset, args.partition, args.alpha, args.seed, args.data)
    settings = backends.UpSettings(args.owners, data, args.tls, args.insecure_randomness)
    cluster = backend.up(settings)
    print(f"{backend.name} backend: {len(cluster.players)} players up ({args.owners} data owners); {backend.where}")
    print(f"links: {cluster.links}")
    print(f"metrics: Prometheus at {cluster.metrics.prometheus}")
    print(f"dashboard: {dashboard.url(cluster.metrics.prometheus)}")
    print(f"data: {describe_data(cluster)}")


def describe_data(cluster) -> str:
    """What the owners hold: their own files, or a simulated split with each shard's size."""
    dataset = cluster.dataset
    if dataset is None:
        return "each owner's own files (fl up --data), in <its data dir>/own; train with `fl run SCRIPT`"
    split = dataset.partition if dataset.partition == "iid" else f"{dataset.partition} alpha={dataset.alpha:g}"
    shards = ", ".join(f"{owner} {count}" for owner, count in (dataset.train_examples or {}).items())
    return f"SIMULATION: {dataset.name} split {split} (seed {dataset.seed}): {shards}; test set {dataset.test_examples}"


def _certs(args) -> None:
    from fl.backends.docker import PKI_DIR, DockerBackend, identities
    from fl.backends.swarm import SwarmBackend
    from fl.cluster import Cluster
    from fl.mesh.pki import ClusterPKI

    backend = DockerBackend(args.state_dir)
    cluster = Cluster.load(backend.cluster_file)
    if cluster.mesh is None:
        raise FLError(
            f"the cluster in {backend.cluster_file} has plaintext links, so no certificates: `fl up --backend docker --tls`"
        )
    pki = ClusterPKI(backend.directory / PKI_DIR)
    if args.rotate and cluster.backend == "swarm" and SwarmBackend(args.state_dir).is_up():
        raise FLError(
            "--rotate while the swarm backend's cluster is up: its keys are swarm secrets, which never change in "
            "place; `fl down`, `fl certs --rotate`, then `fl up --backend swarm`"
        )
    if args.rotate:
        rotated = pki.ensure(identities(cluster), rotate=True)
        reloaded = backend.reload_sidecars(cluster) if backend.is_up() else []
        running = ", ".join(reloaded) or "none running"
        print(f"pki: new CA and certificates for {len(rotated)} identities; reloaded: {running}")
    for certificate in pki.certificates():
        expires = f"{certificate.not_after:%Y-%m-%d}"
        print(f"{certificate.identity:<14} serial {certificate.serial:x}  expires {expires}  sha256 {certificate.sha256[:16]}")


def _render(args) -> None:
    from fl.backends import DataSettings, docker

    path = docker.write_project(args.directory, args.owners, DataSettings(args.dataset), tls=args.tls)
    print(f"wrote {path} and its cluster file for {args.owners} data owners")


def _status(args) -> int:
    from fl.cluster import Cluster

    backend = _cluster_backend(args.state_dir)
    rows = backend.status()
    cluster = Cluster.load(backend.cluster_file)
    print(f"{backend.name} backend ({backend.where}); links: {cluster.links}")
    print(f"data: {describe_data(cluster)}")
    for row in rows:
        print(f"{row.player:<14} {row.role:<15} {row.address:<22} {row.where:<26} {row.process:<8} {row.server:<14} {row.link}")
    return 0 if all(row.healthy for row in rows) else 1


def _down(args) -> None:
    from fl import backends

    backend = backends.active(args.state_dir)
    if backend is None:
        print(f"no cluster in {args.state_dir}: nothing to stop")
        return
    stopped = backend.down(volumes=args.volumes)
    print(f"{backend.name} backend: stopped {', '.join(stopped) or 'nothing (it was not running)'}")
    if not args.volumes:
        print("kept the players' stored data (shards, Prometheus's history); `fl down --volumes` removes it")


def _logs(args) -> None:
    print(_cluster_backend(args.state_dir).logs(args.lines))


def _cluster_backend(state_dir: Path):
    from fl import backends

    backend = backends.active(state_dir)
    if backend is None:
        raise FLError(f"no cluster in {state_dir}: start one with `fl up --state-dir {state_dir}`")
    return backend


def _split(args) -> None:
    from fl.cluster import Cluster
    from fl.data import datasets
    from fl.data.split import write_shards

    cluster = Cluster.load(args.config)
    dataset = datasets.load(args.dataset, seed=args.seed)
    print(f"SIMULATION ONLY: splitting {dataset.name} ({args.partition}) among {len(cluster.data_owners)} data owners")
    meta = write_shards(cluster, dataset, args.partition, args.alpha, args.seed, only=args.only)
    if args.only is None:
        cluster.dataset = meta
        cluster.save(args.config)
    print(json.dumps(meta.train_examples), f"test examples on {cluster.model_owner.name}: {meta.test_examples}")


# the flags each kind of benchmark reads; another kind's flag is refused, not ignored
SWEEP_FLAGS = ("backend", "profiles", "tls", "sizes", "peers", "peer_owners", "peer_sizes")
PRIVACY_FLAGS = ("noise_multipliers", "repeats")


def _bench(args) -> None:
    from dataclasses import asdict, replace

    from fl.bench import report, sweep

    if args.mode == "privacy":
        return _bench_privacy(args)
    _refuse_flags(args, PRIVACY_FLAGS, "only with --mode privacy")
    settings = replace(
        sweep.QUICK if args.mode == "quick" else sweep.FULL,
        backend=args.backend or "local",
        profiles=tuple(args.profiles or ["lan"]),
    )
    if args.tls:
        settings = replace(settings, tls=tuple(choice == "on" for choice in args.tls))
    if args.aggregations:
        settings = replace(settings, aggregations=tuple(args.aggregations))
    if args.owners:
        settings = replace(settings, owners=tuple(args.owners))
    if args.sizes:
        settings = replace(settings, sizes=tuple(args.sizes))
    if args.peer_owners:
        settings = replace(settings, peer_owners=tuple(args.peer_owners))
    if args.peer_sizes:
        settings = replace(settings, peer_sizes=tuple(args.peer_sizes))
    settings = replace(settings, peers=tuple(name for name in args.peers or ["flower"] if name != "none"))
    print(f"bench ({args.mode}): {settings}")
    result = sweep.run(settings)
    outputs = report.write(result, {"mode": args.mode, **asdict(settings)}, args.out)
    print(report.markdown(report.with_ratios(result.rows)))
    for peer, reason in result.unavailable_peers.items():
        print(f"{peer} did not run: {reason}")
    print("wrote " + ", ".join(str(path) for path in outputs.values()))


def _bench_privacy(args) -> None:
    from dataclasses import asdict, replace

    from fl.bench import privacy, privacy_report

    _refuse_flags(args, SWEEP_FLAGS, "not with --mode privacy (it trains on a local cluster of its own)")
    settings = privacy.PrivacyBenchSettings()
    for flag, values in (("--owners", args.owners), ("--aggregations", args.aggregations)):
        if values and len(values) != 1:
            raise FLError(f"{flag} {' '.join(map(str, values))}: --mode privacy takes one value")
    if args.owners:
        settings = replace(settings, owners=args.owners[0])
    if args.aggregations:
        settings = replace(settings, aggregation=args.aggregations[0])
    if args.noise_multipliers:
        settings = replace(settings, noise_multipliers=tuple(args.noise_multipliers))
    if args.repeats is not None:
        settings = replace(settings, repeats=args.repeats)
    print(f"bench (privacy): {settings}")
    rows = privacy.run(settings)
    outputs = privacy_report.write(rows, asdict(settings), args.out)
    print(privacy_report.markdown(rows, asdict(settings)))
    print("wrote " + ", ".join(str(path) for path in outputs.values()))


def _kit(args) -> None:
    from fl import backends, kit
    from fl.backends.docker import PKI_DIR

    addresses = kit.read_addresses(args.address, args.addresses)
    data = backends.DataSettings(args.dataset, args.partition, args.alpha, args.seed)
    written = kit.write(args.out, args.owners, addresses, data)
    parties = ", ".join(path.name for path in written)
    print(f"kits: {len(written)} in {args.out} ({parties}); the CA's key in {args.out / PKI_DIR}, in no kit")
    print("each party: copy its directory to its host, load the player and sidecar images, `docker compose up -d` there")
    print(f"the driver: `docker compose up -d` in {args.out / 'driver'}, then `fl train --state-dir {args.out / 'driver'}`")


def _probe(args) -> None:
    import json

    from fl.cluster import Cluster, unreachable

    cluster = Cluster.load(args.config)
    silent = unreachable(cluster.players)
    print(json.dumps({player.name: player not in silent for player in cluster.players}))


def _swarm_up(args) -> None:
    import time

    from fl.backends.docker import require_images
    from fl.swarm import nodes

    require_images(args.load)  # before any node starts
    started = time.monotonic()
    joined = nodes.up(args.nodes)
    print(f"swarm: {len(joined)} nodes joined in {time.monotonic() - started:.1f} s: {', '.join(n.name for n in joined)}")
    if args.load:
        started = time.monotonic()
        nodes.load_images(args.load)
        print(f"swarm: loaded {', '.join(args.load)} into every node in {time.monotonic() - started:.1f} s")


def _swarm_down(args) -> None:
    from fl.swarm import nodes

    removed = nodes.down()
    print(f"swarm: removed {', '.join(removed.nodes) or 'no nodes (none were up)'}")
    if removed.left_swarm:
        print("swarm: this engine left the swarm `fl swarm up` had started")
    elif removed.kept_swarm_because:
        print(f"swarm: kept this engine in the swarm: {removed.kept_swarm_because}")


def _swarm_status(args) -> int:
    from fl.swarm import nodes

    listed = nodes.status()
    for node in listed:
        labels = " ".join(f"{k}={v}" for k, v in sorted(node.labels.items()))
        print(f"{node.name:<18} {node.state:<8} DOCKER_HOST={nodes.engine_host(node.name)}  {labels}")
    if not listed:
        print("swarm: no nodes (`fl swarm up --nodes N` starts them)")
    return 0 if listed and all(node.state == "ready" for node in listed) else 1


def _refuse_flags(args, names: tuple[str, ...], why: str) -> None:
    given = [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) is not None]
    if given:
        raise FLError(f"{', '.join(given)}: {why}")


def _train(args) -> int | None:
    settings = train_settings.TrainSettings(
        **{name: getattr(args, name) for name in train_settings.flag_fields()}
    )  # before anything starts: a bad setting is one line
    return _as_driver(args, lambda config: _train_here(config, settings, args))


def _train_here(config: Path, settings, args) -> None:
    from fl.train import train

    summary = train(str(config), settings, args.json, args.insecure_randomness, args.save)
    rounds = f"{summary['rounds']} rounds" + (f", mean round {summary['mean_round_seconds']:.3f}s" if summary["rounds"] else "")
    print(f"{summary['aggregation']}: test accuracy {summary['test_accuracy']:.4f}, loss {summary['test_loss']:.4f}, {rounds}")


def _run(args) -> int | None:
    from fl import experiment

    script = args.script.resolve()
    if not script.is_file():
        raise FLError(f"{args.script}: no such script; pass the path of a Python file, e.g. examples/cnn_digits.py")
    return _as_driver(
        args,
        lambda config: experiment.run_here(script, args.args, config, args.insecure_randomness),
        lambda backend: experiment.run_in_container(backend, script, args.args, args.argv),
    )


def _active_or_none(state_dir: Path):
    from fl import backends

    return backends.active(state_dir)


def _as_driver(args, run_here, run_in_container=None) -> int | None:
    """Run as the cluster's one driver: here (local backend, or inside the driver container), or in the driver
    container (`run_in_container(backend)`, else this same command forwarded), where a Ctrl-C on this host is passed on."""
    from fl import driver_lock, stop_request

    stop_request.install(args.command)
    backend = _active_or_none(args.state_dir)
    if backend is not None and not backend.driver_is_this_host:
        if run_in_container is not None:
            return run_in_container(backend)
        if args.config is not None:
            raise FLError(
                f"--config {args.config}: the {backend.name} cluster of {args.state_dir} trains in its driver container, "
                f"on the cluster file mounted there ({backend.cluster_file}); drop --config"
            )
        print(f"{backend.name} backend: training runs in the driver container")
        forwarded = _without_options(args.argv, ("--state-dir",))
        return driver_lock.forward_to_driver(backend, ["fl", *forwarded, "--config", backend.driver_cluster_file])
    config = args.config or (backend.cluster_file if backend else args.state_dir / "cluster.json")
    with driver_lock.hold(str(config)):
        return run_here(config)


def _keras_path(path: str) -> str:
    if not path.endswith(KERAS_SUFFIX):
        raise argparse.ArgumentTypeError(f"{path!r}: the Keras format's files end in {KERAS_SUFFIX}, e.g. model.keras")
    return path


def _without_options(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """argv minus the given options and their values (as `--opt value` or `--opt=value`)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in options)):
            kept.append(arg)
    return kept
