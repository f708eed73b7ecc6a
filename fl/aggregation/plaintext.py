"""The baseline: owners send their updates in the clear and the receiver averages them."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from fl.aggregation.base import Aggregation
from fl.cluster import Cluster, Player
from fl.policies import RangePolicy

FLOAT32_BYTES = 4


class PlaintextAverage(Aggregation):
    """Not private: the receiver sees every owner's update. For tests and benchmarks."""

    name = "plaintext"

    @classmethod
    def from_cluster(cls, cluster: Cluster, policy: RangePolicy = RangePolicy()) -> PlaintextAverage:
        return cls(cluster.model_owner, policy)

    def share(self, updates: Mapping[Player, tf.Tensor], metric_count: int) -> list[tf.Tensor]:
        with tf.device(self.output_receiver.device_name):
            return [tf.identity(update) for update in updates.values()]

    def sum(self, held: list[tf.Tensor]) -> tf.Tensor:
        with tf.device(self.output_receiver.device_name):
            return tf.add_n(held)

    def reveal(self, summed: tf.Tensor, metric_count: int) -> tf.Tensor:
        return summed

    def element_bytes(self) -> int:
        return FLOAT32_BYTES

    def expected_bytes(self, owners: list[Player], size: int) -> dict[str, int]:
        return {owner.name: FLOAT32_BYTES * size for owner in owners}
