"""The baseline: owners send their updates in the clear and the receiver averages them."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from fl.aggregation.base import Aggregation
from fl.cluster import Player
from fl.phases import PhaseClock

FLOAT32_BYTES = 4


class PlaintextAverage(Aggregation):
    """Not private: the receiver sees every owner's update. For tests and benchmarks."""

    name = "plaintext"

    def aggregate(self, updates: Mapping[Player, tf.Tensor], clock: PhaseClock | None = None) -> tf.Tensor:
        clock = clock or PhaseClock()
        with tf.device(self.output_receiver.device_name):
            received = [tf.identity(update) for update in updates.values()]
            clock.lap("sharing")
            mean = tf.add_n(received) / float(len(received))
        clock.lap("aggregation")
        return mean

    def element_bytes(self) -> int:
        return FLOAT32_BYTES

    def expected_bytes(self, owners: list[Player], size: int) -> dict[str, int]:
        return {owner.name: FLOAT32_BYTES * size for owner in owners}
