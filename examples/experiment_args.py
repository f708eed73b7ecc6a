"""What every example takes on its command line, and the cluster it runs on (`fl run` says which)."""

from __future__ import annotations

import argparse

import fl
from fl.aggregation.registry import AGGREGATIONS, make_aggregation


def parser(description: str, rounds: int) -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--aggregation", choices=AGGREGATIONS, default="additive")
    arguments.add_argument("--rounds", type=int, default=rounds, help="federated rounds")
    arguments.add_argument("--seed", type=int, default=0)
    return arguments


def connect(args: argparse.Namespace, dataset: str | None = None):
    """The cluster, this script as its driver, and the chosen aggregation; `dataset`: the split the example needs."""
    cluster = fl.connect()
    if dataset is not None and (cluster.dataset is None or cluster.dataset.name != dataset):
        have = cluster.dataset.name if cluster.dataset else "the owners' own files"
        raise SystemExit(f"this example trains on {dataset}, the cluster holds {have}: `fl up --dataset {dataset}` first")
    return cluster, make_aggregation(args.aggregation, cluster)
