"""Owner-side data pipelines: files that live with a player, read on that player's device.

The driver holds only an `OwnerData` (a path on the owner's host and the record
schema). The pipeline is built inside functions the driver places on the owner,
so the records are parsed there and never cross the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from fl.cluster import Cluster, Player
from fl.data.split import TEST_SHARD, TRAIN_SHARD
from fl.errors import FLError

SHUFFLE_BUFFER = 1 << 16


@dataclass(frozen=True)
class OwnerData:
    """A TFRecord file at `path` on `player`'s own host, with `feature_size` floats and a label per record."""

    player: Player
    path: str
    feature_size: int

    def dataset(self, batch_size: int, shuffle_seed: tf.Tensor | None = None) -> tf.data.Dataset:
        """The pipeline; call it inside a function running on `player`'s device.

        Shuffling is stateless in `shuffle_seed` (a tensor, so one traced function
        serves every round) and covers blocks of SHUFFLE_BUFFER records.
        """
        schema = {
            "x": tf.io.FixedLenFeature([self.feature_size], tf.float32),
            "y": tf.io.FixedLenFeature([], tf.int64),
        }
        records = tf.data.TFRecordDataset(self.path)
        if shuffle_seed is not None:
            seed = tf.stack([tf.cast(shuffle_seed, tf.int64), tf.constant(0, tf.int64)])
            records = records.batch(SHUFFLE_BUFFER).map(lambda block: _permuted(block, seed)).unbatch()
        return records.batch(batch_size).map(lambda batch: _features_and_label(tf.io.parse_example(batch, schema)))


def _permuted(block: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    return tf.gather(block, tf.argsort(tf.random.stateless_uniform(tf.shape(block), seed)))


def _features_and_label(parsed: dict) -> tuple[tf.Tensor, tf.Tensor]:
    return parsed["x"], parsed["y"]


def owner_sources(cluster: Cluster) -> tuple[dict[Player, OwnerData], OwnerData]:
    """Each data owner's training shard and the model owner's test set, as `fl split` placed them."""
    if cluster.dataset is None:
        raise FLError("the cluster has no data yet: run `fl split --dataset digits` (make up does) before training")
    feature_size = cluster.dataset.feature_size
    train = {p: OwnerData(p, f"{p.data_dir}/{TRAIN_SHARD}", feature_size) for p in cluster.data_owners}
    test = OwnerData(cluster.model_owner, f"{cluster.model_owner.data_dir}/{TEST_SHARD}", feature_size)
    return train, test
