"""The testbed's own shards (`fl split`, `fl up`): one pipeline, of the kind fl/data/pipelines.py describes.

The driver holds only an `OwnerData` (a path on the owner's host and the record
schema: the features' shape, the label's dtype). The pipeline is built inside functions
the driver places on the owner, so the records are parsed there and never cross the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from fl.cluster import Cluster, DatasetInfo, Player
from fl.data.pipelines import shuffled
from fl.data.split import TEST_SHARD, TRAIN_SHARD
from fl.errors import FLError


@dataclass(frozen=True)
class OwnerData:
    """A TFRecord file at `path` on `player`'s own host: float32 features of `feature_shape` and a label per record."""

    player: Player
    path: str
    feature_shape: tuple[int, ...]
    label_dtype: str = "int64"

    def dataset(self, batch_size: int, shuffle_seed: tf.Tensor | None = None) -> tf.data.Dataset:
        """The pipeline; call it inside a function running on `player`'s device.

        Shuffling is stateless in `shuffle_seed` (a tensor, so one traced function
        serves every round) and covers blocks of `fl.data.pipelines.SHUFFLE_BUFFER` records.
        """
        label = tf.as_dtype(self.label_dtype)
        schema = {
            "x": tf.io.FixedLenFeature(list(self.feature_shape), tf.float32),
            "y": tf.io.FixedLenFeature([], tf.int64 if label.is_integer else tf.float32),
        }
        records = tf.data.TFRecordDataset(self.path)
        if shuffle_seed is not None:
            records = shuffled(records, shuffle_seed)
        return records.batch(batch_size).map(lambda batch: _features_and_label(tf.io.parse_example(batch, schema)))


def _features_and_label(parsed: dict) -> tuple[tf.Tensor, tf.Tensor]:
    return parsed["x"], parsed["y"]


def shard(player: Player, path: str, dataset: DatasetInfo) -> OwnerData:
    return OwnerData(player, path, tuple(dataset.feature_shape), dataset.label_dtype)


def owner_sources(cluster: Cluster) -> tuple[dict[Player, OwnerData], OwnerData]:
    """Each data owner's training shard and the model owner's test set, as `fl split` placed them."""
    if cluster.dataset is None:
        raise FLError(
            "the cluster has no shards of a public data set (its owners may hold their own, `fl up --data`): "
            "train with `fl run SCRIPT` and a pipeline per owner, or `fl split --dataset digits` first"
        )
    train = {p: shard(p, f"{p.data_dir}/{TRAIN_SHARD}", cluster.dataset) for p in cluster.data_owners}
    test = shard(cluster.model_owner, f"{cluster.model_owner.data_dir}/{TEST_SHARD}", cluster.dataset)
    return train, test
