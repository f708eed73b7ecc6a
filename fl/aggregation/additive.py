"""Secure averaging by additive secret sharing among the compute players.

Each input owner encodes its update in fixed point and splits it into one share
per compute player. Every share but one is a ChaCha20 keystream expanded from a
fresh seed, so the owner sends only the 32-byte seed and the compute player
expands it on its own device; the owner keeps (or sends) the remaining share,
its update minus the masks. Each compute player adds up the shares it holds and
sends that one vector to the output receiver, which adds the partial sums,
decodes, and divides. Any strict subset of compute players sees only uniformly
random values; the receiver learns the average and nothing else.

Not resilient: every compute player must take part in every round (no dropout
recovery as in Bonawitz et al.'s SecAgg).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from fl import secure_random
from fl.aggregation import fixedpoint
from fl.aggregation.base import DEFAULT_MAX_CLIPPED_FRACTION, Aggregation
from fl.cluster import Player
from fl.phases import PhaseClock

SEED_BYTES = 4 * secure_random.SEED_WORDS
RING_ELEMENT_BYTES = 8


class AdditiveSecureAverage(Aggregation):
    name = "additive"

    def __init__(
        self,
        compute_players: Sequence[Player],
        output_receiver: Player,
        value_range: float = 32.0,
        out_of_range: str = "clip",
        fractional_bits: int = 24,
        max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION,
    ) -> None:
        super().__init__(output_receiver, value_range, out_of_range, max_clipped_fraction)
        if len(compute_players) < 2:
            raise ValueError(f"additive sharing needs at least 2 compute players, got {len(compute_players)}")
        self.compute_players = list(compute_players)
        self.fractional_bits = fractional_bits

    @property
    def players(self) -> list[Player]:
        return [*self.compute_players, self.output_receiver]

    def capacity(self, inputs: int) -> float:
        return fixedpoint.capacity(self.fractional_bits, inputs)

    def aggregate(self, updates: Mapping[Player, tf.Tensor], clock: PhaseClock | None = None) -> tf.Tensor:
        secure_random.require()
        clock = clock or PhaseClock()
        held: dict[Player, list[tf.Tensor]] = {player: [] for player in self.compute_players}
        for owner, update in updates.items():
            for holder, share in self.share(owner, update).items():
                held[holder].append(share)
        clock.lap("sharing")
        partial_sums = []
        for player, shares in held.items():
            with tf.device(player.device_name):
                partial_sums.append(tf.add_n(shares))
        clock.lap("aggregation")
        with tf.device(self.output_receiver.device_name):
            mean = fixedpoint.decode_mean(tf.add_n(partial_sums), self.fractional_bits, len(updates))
        clock.lap("reveal")
        return mean

    def share(self, owner: Player, update: tf.Tensor) -> dict[Player, tf.Tensor]:
        """Split `owner`'s update into one share per compute player, each on its holder's device."""
        keeper = owner if owner in self.compute_players else self.compute_players[0]
        shape = update.shape.as_list()
        shares: dict[Player, tf.Tensor] = {}
        with tf.device(owner.device_name):
            residual = fixedpoint.encode(update, self.fractional_bits)
        for player in self.compute_players:
            if player == keeper:
                continue
            with tf.device(owner.device_name):
                seed = secure_random.secure_seed()
                residual = residual - secure_random.seeded_full_range(shape, seed)
            with tf.device(player.device_name):
                shares[player] = secure_random.seeded_full_range(shape, seed)
        with tf.device(keeper.device_name):
            shares[keeper] = tf.identity(residual)
        return shares

    def element_bytes(self) -> int:
        return RING_ELEMENT_BYTES

    def expected_bytes(self, owners: list[Player], size: int) -> dict[str, int]:
        vector = RING_ELEMENT_BYTES * size
        sent = {player.name: vector for player in self.compute_players if player != self.output_receiver}
        for owner in owners:
            keeper = owner if owner in self.compute_players else self.compute_players[0]
            seeds = SEED_BYTES * (len(self.compute_players) - 1)
            sent[owner.name] = sent.get(owner.name, 0) + seeds + (0 if keeper == owner else vector)
        return sent
