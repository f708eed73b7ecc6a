"""SIMULATION ONLY: split one centrally held data set among N players.

Real federations never do this: each owner already has its data. The testbed
uses it to give every data owner a shard (IID, or label-skewed by a Dirichlet
draw with concentration `alpha`: smaller alpha, more skew), written as a
TFRecord file into that owner's own data directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fl.cluster import Cluster, DatasetInfo
from fl.data.datasets import Dataset
from fl.errors import FLError
from fl.policies import PARTITIONS

TRAIN_SHARD = "train.tfrecord"
TEST_SHARD = "test.tfrecord"


def split_among_players(
    x: np.ndarray, y: np.ndarray, players: int, partition: str = "iid", alpha: float = 0.5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Simulation-only: shard (x, y) into `players` parts; every part gets at least one example."""
    if players < 1 or players > len(x):
        raise FLError(f"cannot split {len(x)} examples among {players} players; use 1..{len(x)} players")
    rng = np.random.default_rng(seed)
    if partition == "dirichlet" and np.asarray(y).dtype.kind == "f":
        raise FLError("the dirichlet partition skews a classification's labels; these labels are a regression's: use iid")
    if partition == "iid":
        parts = np.array_split(rng.permutation(len(x)), players)
    elif partition == "dirichlet":
        if alpha <= 0:
            raise FLError(f"dirichlet alpha must be > 0, got {alpha}; try 0.5 (skewed) or 100 (near IID)")
        parts = _dirichlet_parts(y, players, alpha, rng)
    else:
        raise FLError(f"unknown partition {partition!r}; use one of {', '.join(PARTITIONS)}")
    return [(x[np.sort(idx)], y[np.sort(idx)]) for idx in parts]


def _dirichlet_parts(y: np.ndarray, players: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    parts: list[list[int]] = [[] for _ in range(players)]
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        shares = rng.dirichlet(np.full(players, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts)):
            part.extend(chunk.tolist())
    for part in parts:  # an owner with no data cannot train: lend it one example
        if not part:
            donor = max(parts, key=len)
            part.append(donor.pop())
    return [np.array(part, dtype=np.int64) for part in parts]


def write_tfrecord(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for features, label in zip(x, y):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "x": tf.train.Feature(float_list=tf.train.FloatList(value=features.reshape(-1))),
                        "y": _label_feature(label),
                    }
                )
            )
            writer.write(example.SerializeToString())


def _label_feature(label: np.generic):
    import tensorflow as tf

    if np.asarray(label).dtype.kind == "f":
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(label)]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))


def plan_shards(
    owners: list[str], dataset: Dataset, partition: str = "iid", alpha: float = 0.5, seed: int = 0
) -> tuple[list[tuple[np.ndarray, np.ndarray]], DatasetInfo]:
    """Each owner's part of the training set, and the public facts about the split (deterministic in `seed`)."""
    parts = split_among_players(dataset.x_train, dataset.y_train, len(owners), partition, alpha, seed)
    info = DatasetInfo(
        name=dataset.name,
        feature_shape=dataset.feature_shape,
        num_classes=dataset.num_classes,
        label_dtype=dataset.label_dtype,
        partition=partition,
        alpha=alpha,
        seed=seed,
        train_examples={owner: len(y) for owner, (_, y) in zip(owners, parts)},
        test_examples=len(dataset.y_test),
    )
    return parts, info


def write_shards(
    cluster: Cluster, dataset: Dataset, partition: str = "iid", alpha: float = 0.5, seed: int = 0, only: str | None = None
) -> DatasetInfo:
    """Simulation-only: write each data owner's shard and the model owner's test set into their data dirs.

    `only` writes just that player's file, for hosts that each prepare their own
    (the split is deterministic in `seed`). Returns the public metadata the driver needs.
    """
    owners = cluster.data_owners
    parts, info = plan_shards([owner.name for owner in owners], dataset, partition, alpha, seed)
    for owner, (x, y) in zip(owners, parts):
        if only in (None, owner.name):
            write_tfrecord(Path(owner.data_dir) / TRAIN_SHARD, x, y)
    if only in (None, cluster.model_owner.name):
        write_tfrecord(Path(cluster.model_owner.data_dir) / TEST_SHARD, dataset.x_test, dataset.y_test)
    return info
