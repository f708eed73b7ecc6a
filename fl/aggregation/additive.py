"""Secure averaging by additive secret sharing among the compute players.

Each input owner encodes its update in fixed point and splits it into shares held
by the compute players. Every share but one is a ChaCha20 keystream expanded from a
fresh seed, so the owner sends only the 32-byte seed and the compute player
expands it on its own device; the owner keeps (or sends) the remaining share,
its update minus the masks. Each compute player adds up the shares it holds and
sends that one vector to the output receiver, which adds the partial sums and
decodes. Any strict subset of compute players sees only uniformly random values;
the receiver learns the sum and nothing else.

When the owners are the compute players (the default), one seed per pair of owners
is enough, as in Bonawitz et al.'s SecAgg: an owner masks its update for the owners
after it only, and the owners before it have masked theirs for it. What each owner
sends the receiver is then its update plus the pairwise masks, which cancel in the
sum. Each owner expands n-1 keystreams instead of 2(n-1), and owners reveal no more:
the masks between any two honest owners hide each one's update from the rest.

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
from typing import NamedTuple

import tensorflow as tf

from fl import secure_random
from fl.aggregation import fixedpoint
from fl.aggregation.base import Aggregation
from fl.aggregation.fixedpoint import METRIC_FRACTIONAL_BITS, Ring
from fl.cluster import DATA_OWNER, Cluster, Player
from fl.errors import FLError
from fl.policies import RangePolicy

SEED_BYTES = 4 * secure_random.SEED_WORDS


class HeldShares(NamedTuple):
    """What one compute player holds of a round: vectors, and the seeds whose keystreams it adds to their
    sum (shares sent as seeds) or subtracts from it (its own masks, when it keeps its own residual)."""

    vectors: list[tf.Tensor]
    added: list[tf.Tensor]
    subtracted: list[tf.Tensor]


class AdditiveSecureAverage(Aggregation):
    name = "additive"

    def __init__(
        self,
        compute_players: Sequence[Player],
        output_receiver: Player,
        policy: RangePolicy = RangePolicy(),
        ring: Ring | None = None,
    ) -> None:
        """`ring` defaults to the narrowest that sums one update per compute player (the owners share among themselves)."""
        super().__init__(output_receiver, policy)
        if len(compute_players) < 2:
            raise ValueError(f"additive sharing needs at least 2 compute players, got {len(compute_players)}")
        self.compute_players = list(compute_players)
        self.ring = ring or fixedpoint.choose_ring(self.value_range, len(self.compute_players))

    @classmethod
    def from_cluster(cls, cluster: Cluster, policy: RangePolicy = RangePolicy()) -> AdditiveSecureAverage:
        """The owners share among themselves: no compute servers needed."""
        return cls(cluster.data_owners, cluster.model_owner, policy)

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
        return AdditiveSecureAverage(kept, self.output_receiver, self.policy, ring=self.ring)

    def fractional_bits(self) -> int:
        return self.ring.fractional_bits

    def capacity(self, inputs: int) -> float:
        return self.ring.capacity(inputs)

    def metric_capacity(self, inputs: int) -> float:
        return self.ring.capacity(inputs, METRIC_FRACTIONAL_BITS)

    def share(self, updates: Mapping[Player, tf.Tensor], metric_count: int) -> dict[Player, HeldShares]:
        secure_random.require()
        held = {player: HeldShares([], [], []) for player in self.compute_players}
        for owner, update in updates.items():
            for holder, shares in self.share_update(owner, update, list(updates), metric_count).items():
                for mine, given in zip(held[holder], shares, strict=True):
                    mine.extend(given)
        size = int(next(iter(updates.values())).shape[0])
        for player, shares in held.items():
            if not shares.vectors:  # a compute server that holds seeds only
                with tf.device(player.device_name):
                    shares.vectors.append(tf.zeros([size], self.ring.dtype))
        return held

    def sum(self, held: Mapping[Player, HeldShares]) -> dict[Player, tf.Tensor]:
        """Each holder folds the keystreams of the seeds it holds into the sum of its vectors, in one pass."""
        partial_sums = {}
        for player, shares in held.items():
            with tf.device(player.device_name):
                partial_sums[player] = secure_random.mask(tf.add_n(shares.vectors), shares.added, shares.subtracted)
        return partial_sums

    def reveal(self, summed: Mapping[Player, tf.Tensor], metric_count: int) -> tf.Tensor:
        total = tf.add_n(list(summed.values()))
        values = int(total.shape[0]) - metric_count
        return tf.concat([self.ring.decode(total[:values]), self.ring.decode(total[values:], METRIC_FRACTIONAL_BITS)], axis=0)

    def share_update(
        self, owner: Player, update: tf.Tensor, owners: Sequence[Player], metric_count: int = 0
    ) -> dict[Player, HeldShares]:
        """Split `owner`'s update (one of `owners`, the round's) into shares, each on its holder's device:
        a seed that the holder expands itself, or (the keeper's) the residual vector.

        An owner that keeps its own residual keeps it as its encoded update and the seeds of its
        masks: the masks are subtracted in the same pass as the holder adds the seeds it was sent.
        """
        keeper, masked_for = self.holders(owner, owners)
        values = int(update.shape[0]) - metric_count
        shares = {}
        with tf.device(owner.device_name):
            seeds = [secure_random.secure_seed() for _ in masked_for]
            encoded = tf.concat(
                [self.ring.encode(update[:values]), self.ring.encode(update[values:], METRIC_FRACTIONAL_BITS)], axis=0
            )
        for player, seed in zip(masked_for, seeds, strict=True):
            with tf.device(player.device_name):
                shares[player] = HeldShares([], [tf.identity(seed)], [])
        if keeper == owner:
            shares[owner] = HeldShares([encoded], [], seeds)
        else:
            with tf.device(owner.device_name):
                residual = secure_random.mask(encoded, subtracted=seeds)
            with tf.device(keeper.device_name):
                shares[keeper] = HeldShares([tf.identity(residual)], [], [])
        return shares

    def holders(self, owner: Player, owners: Sequence[Player]) -> tuple[Player, list[Player]]:
        """Who keeps `owner`'s residual share, and the compute players it sends a seed to.

        An owner that is a compute player keeps its residual. When every compute player is
        one of the round's `owners`, it masks for the compute players after it only: the ones
        before it masked their updates for it, so each pair shares one seed. Otherwise a compute
        player could end up with no mask of its own and none from others, so each owner masks
        for every other holder.
        """
        if owner not in self.compute_players:
            return self.compute_players[0], self.compute_players[1:]
        if set(self.compute_players) <= set(owners):
            return owner, self.compute_players[self.compute_players.index(owner) + 1 :]
        return owner, [player for player in self.compute_players if player != owner]

    def element_bytes(self) -> int:
        return self.ring.element_bytes

    def expected_bytes(self, owners: list[Player], size: int) -> dict[str, int]:
        vector = self.ring.element_bytes * size
        sent = {player.name: vector for player in self.compute_players if player != self.output_receiver}
        for owner in owners:
            keeper, masked_for = self.holders(owner, owners)
            sent[owner.name] = sent.get(owner.name, 0) + SEED_BYTES * len(masked_for) + (0 if keeper == owner else vector)
        return sent

    def describe(self) -> str:
        return f"{self.name} in {self.ring}"
