"""Secure averaging by additive secret sharing among the compute players.

Each input owner encodes its update in fixed point and splits it into one share
per compute player. Every share but one is a ChaCha20 keystream expanded from a
fresh seed, so the owner sends only the 32-byte seed and the compute player
expands it on its own device; the owner keeps (or sends) the remaining share,
its update minus the masks. Each compute player adds up the shares it holds and
sends that one vector to the output receiver, which adds the partial sums and
decodes. Any strict subset of compute players sees only uniformly random values;
the receiver learns the sum and nothing else.

The ring is the narrowest that holds the sum (fixedpoint.choose_ring): with the
default ±32 and up to 8 owners a 32-bit ring, so an owner sends 4 bytes a value,
as in plaintext.

An owner that misses the local-training deadline of a quorum round is left out before
sharing starts, as a compute player too; the others share among themselves. An owner lost
after sharing has begun fails the round: there is no dropout recovery as in Bonawitz et
al.'s SecAgg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from fl import secure_random
from fl.aggregation import fixedpoint
from fl.aggregation.base import DEFAULT_MAX_CLIPPED_FRACTION, Aggregation
from fl.aggregation.fixedpoint import METRIC_FRACTIONAL_BITS, Ring
from fl.cluster import DATA_OWNER, Cluster, Player
from fl.errors import FLError

SEED_BYTES = 4 * secure_random.SEED_WORDS


class AdditiveSecureAverage(Aggregation):
    name = "additive"

    def __init__(
        self,
        compute_players: Sequence[Player],
        output_receiver: Player,
        value_range: float = 32.0,
        out_of_range: str = "clip",
        max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION,
        ring: Ring | None = None,
    ) -> None:
        """`ring` defaults to the narrowest that sums one update per compute player (the owners share among themselves)."""
        super().__init__(output_receiver, value_range, out_of_range, max_clipped_fraction)
        if len(compute_players) < 2:
            raise ValueError(f"additive sharing needs at least 2 compute players, got {len(compute_players)}")
        self.compute_players = list(compute_players)
        self.ring = ring or fixedpoint.choose_ring(self.value_range, len(self.compute_players))

    @classmethod
    def from_cluster(cls, cluster: Cluster, **bounds: Any) -> AdditiveSecureAverage:
        """The owners share among themselves: no compute servers needed."""
        return cls(cluster.data_owners, cluster.model_owner, **bounds)

    @property
    def players(self) -> list[Player]:
        return [*self.compute_players, self.output_receiver]

    def for_owners(self, owners: list[Player]) -> AdditiveSecureAverage:
        """Owners that left the round leave the compute players too: the rest share among themselves."""
        kept = [player for player in self.compute_players if player.role != DATA_OWNER or player in owners]
        if kept == self.compute_players:
            return self
        if len(kept) < 2:
            raise FLError(f"additive sharing needs 2 compute players; only {', '.join(p.name for p in kept)} delivered")
        bounds = {"out_of_range": self.out_of_range, "max_clipped_fraction": self.max_clipped_fraction}
        return AdditiveSecureAverage(kept, self.output_receiver, self.value_range, ring=self.ring, **bounds)

    def capacity(self, inputs: int) -> float:
        return self.ring.capacity(inputs)

    def metric_capacity(self, inputs: int) -> float:
        return self.ring.capacity(inputs, METRIC_FRACTIONAL_BITS)

    def share(self, updates: Mapping[Player, tf.Tensor], metric_count: int) -> dict[Player, list[tf.Tensor]]:
        secure_random.require()
        held: dict[Player, list[tf.Tensor]] = {player: [] for player in self.compute_players}
        for owner, update in updates.items():
            for holder, share in self.share_update(owner, update, metric_count).items():
                held[holder].append(share)
        return held

    def sum(self, held: Mapping[Player, list[tf.Tensor]]) -> dict[Player, tf.Tensor]:
        partial_sums = {}
        for player, shares in held.items():
            with tf.device(player.device_name):
                partial_sums[player] = tf.add_n(shares)
        return partial_sums

    def reveal(self, summed: Mapping[Player, tf.Tensor], metric_count: int) -> tf.Tensor:
        total = tf.add_n(list(summed.values()))
        values = int(total.shape[0]) - metric_count
        return tf.concat([self.ring.decode(total[:values]), self.ring.decode(total[values:], METRIC_FRACTIONAL_BITS)], axis=0)

    def share_update(self, owner: Player, update: tf.Tensor, metric_count: int = 0) -> dict[Player, tf.Tensor]:
        """Split `owner`'s update into one share per compute player, each on its holder's device."""
        keeper = owner if owner in self.compute_players else self.compute_players[0]
        shape = update.shape.as_list()
        values = shape[0] - metric_count
        shares: dict[Player, tf.Tensor] = {}
        with tf.device(owner.device_name):
            residual = tf.concat(
                [self.ring.encode(update[:values]), self.ring.encode(update[values:], METRIC_FRACTIONAL_BITS)], axis=0
            )
        for player in self.compute_players:
            if player == keeper:
                continue
            with tf.device(owner.device_name):
                seed = secure_random.secure_seed()
                residual = residual - secure_random.seeded_full_range(shape, seed, self.ring.dtype)
            with tf.device(player.device_name):
                shares[player] = secure_random.seeded_full_range(shape, seed, self.ring.dtype)
        with tf.device(keeper.device_name):
            shares[keeper] = tf.identity(residual)
        return shares

    def element_bytes(self) -> int:
        return self.ring.element_bytes

    def expected_bytes(self, owners: list[Player], size: int) -> dict[str, int]:
        vector = self.ring.element_bytes * size
        sent = {player.name: vector for player in self.compute_players if player != self.output_receiver}
        for owner in owners:
            keeper = owner if owner in self.compute_players else self.compute_players[0]
            seeds = SEED_BYTES * (len(self.compute_players) - 1)
            sent[owner.name] = sent.get(owner.name, 0) + seeds + (0 if keeper == owner else vector)
        return sent

    def describe(self) -> str:
        return f"{self.name} in {self.ring}"
