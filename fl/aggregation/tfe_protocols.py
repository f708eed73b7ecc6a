"""Secure averaging written out with a TF Encrypted protocol, as in tfe issue #670.

Each owner's update enters as `tfe.define_private_input` on that owner, so it is
secret-shared on the owner's device; the compute servers run `add_n(...)` on shares;
`tfe.define_output` reconstructs the sum on the output receiver only, which divides it
by the public number of owners (fl/aggregation/base.py). Dividing on shares instead would cost a truncation
protocol among the servers and reveal nothing more. Pond runs on two servers plus a
crypto producer, ABY3 on three servers. Both share in Z/2^32 with 16 fractional and 14
integral bits (`SUM_RING`): tfe's own 64-bit configurations keep room for products and their
truncation, which a sum never makes, so a 32-bit ring holds more range per value (±2^14 over
all owners against `fixed64_heuristic`'s ±2^11) at half the bytes.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf
import tf_encrypted as tfe
from tf_encrypted.tensor.fixed import FixedpointConfig

from fl import secure_random
from fl.aggregation.additive import SEED_BYTES
from fl.aggregation.base import Aggregation
from fl.cluster import Cluster, Player
from fl.policies import RangePolicy

# tfe warns (print) that this ring is too small for truncation: true, and no sum truncates
SUM_RING = FixedpointConfig(
    scaling_base=2,
    nbits=32,
    precision_integral=14,
    precision_fractional=16,
    matmul_threshold=1,
    truncation_gap=0,
    use_noninteractive_truncation=False,
)


def _quietly(build: Callable[[], tfe.protocol.Protocol]) -> tfe.protocol.Protocol:
    """tfe prints its ring warnings to stdout, where `fl train` writes its progress."""
    with contextlib.redirect_stdout(io.StringIO()):
        return build()


class TfeProtocolAverage(Aggregation):
    """Shared logic of the tfe-protocol averages; subclasses say which protocol and servers."""

    shared_seeds: int
    shared_vectors: int

    def __init__(
        self,
        servers: Sequence[Player],
        output_receiver: Player,
        policy: RangePolicy = RangePolicy(),
    ) -> None:
        super().__init__(output_receiver, policy)
        self.servers = list(servers)
        self._protocol: tfe.protocol.Protocol | None = None

    @property
    def players(self) -> list[Player]:
        return [*self.servers, self.output_receiver]

    def make_protocol(self) -> tfe.protocol.Protocol:
        raise NotImplementedError

    @property
    def protocol(self) -> tfe.protocol.Protocol:
        """Built on first use: tfe resolves player names against the connected RemoteConfig."""
        if self._protocol is None:
            self._protocol = self.make_protocol()
        return self._protocol

    def fractional_bits(self) -> int:
        return self.protocol.fixedpoint_config.precision_fractional

    def capacity(self, inputs: int) -> float:
        config = self.protocol.fixedpoint_config
        return float(config.scaling_base**config.precision_integral) / inputs

    def share(self, updates: Mapping[Player, tf.Tensor], metric_count: int) -> list:
        secure_random.require()
        tfe.set_protocol(self.protocol)
        return [tfe.define_private_input(owner.name, lambda update=update: update) for owner, update in updates.items()]

    def sum(self, held: list):
        return tfe.add_n(held)

    def reveal(self, summed, metric_count: int) -> tf.Tensor:
        received: list[tf.Tensor] = []

        def receive(revealed: tf.Tensor) -> None:
            # tfe re-shares whatever an output function returns, so the value is kept here instead
            received.append(tf.cast(revealed, tf.float32))

        tfe.define_output(self.output_receiver.name, summed, receive)
        return received[0]

    def describe(self) -> str:
        return f"{self.name} in Z/2^{SUM_RING.nbits} with {SUM_RING.precision_fractional} fractional bits (tfe)"

    def held_tensors(self, held) -> list[tf.Tensor]:
        """The ring tensors behind tfe's private tensors (Pond unwraps to two shares, ABY3 holds three pairs)."""
        private = held if isinstance(held, list) else [held]
        shares = [value.unwrapped if hasattr(value, "unwrapped") else value.shares for value in private]
        return [share.value for share in tf.nest.flatten(shares)]

    def element_bytes(self) -> int:
        """Bytes of one shared ring element, as tfe's tensor factory stores it."""
        return self.factory.sample_uniform([1]).value.dtype.size

    @property
    def factory(self):
        raise NotImplementedError

    def expected_bytes(self, owners: list[Player], size: int) -> dict[str, int]:
        """Each owner's sharing (`shared_seeds` seeds, `shared_vectors` full shares); the servers' traffic
        depends on tfe's reveal internals, so it is not stated."""
        vector = self.element_bytes() * size
        return {owner.name: self.shared_seeds * SEED_BYTES + self.shared_vectors * vector for owner in owners}


class PondSecureAverage(TfeProtocolAverage):
    """Pond: 2-out-of-2 sharing between two servers; a third player produces Beaver triples."""

    name = "pond"

    def __init__(
        self,
        servers: Sequence[Player],
        crypto_producer: Player,
        output_receiver: Player,
        policy: RangePolicy = RangePolicy(),
    ) -> None:
        if len(servers) != 2:
            raise ValueError(f"Pond needs exactly 2 servers, got {len(servers)}")
        super().__init__([*servers, crypto_producer], output_receiver, policy)

    @classmethod
    def from_cluster(cls, cluster: Cluster, policy: RangePolicy = RangePolicy()) -> PondSecureAverage:
        server_0, server_1, producer = cluster.compute_servers[:3]
        return cls([server_0, server_1], producer, cluster.model_owner, policy)

    # tfe's Pond._share: one seed to one server, the masked secret to the other
    shared_seeds, shared_vectors = 1, 1

    @property
    def factory(self):
        return self.protocol.tensor_factory

    def make_protocol(self) -> tfe.protocol.Protocol:
        server_0, server_1, producer = self.servers
        return _quietly(
            lambda: tfe.protocol.Pond(
                server_0=server_0.name,
                server_1=server_1.name,
                triple_source=tfe.get_config().get_player(producer.name),
                fixedpoint_config=SUM_RING,
            )
        )


class ABY3SecureAverage(TfeProtocolAverage):
    """ABY3: 2-out-of-3 replicated sharing among three servers."""

    name = "aby3"

    def __init__(
        self,
        servers: Sequence[Player],
        output_receiver: Player,
        policy: RangePolicy = RangePolicy(),
    ) -> None:
        if len(servers) != 3:
            raise ValueError(f"ABY3 needs exactly 3 servers, got {len(servers)}")
        super().__init__(servers, output_receiver, policy)

    @classmethod
    def from_cluster(cls, cluster: Cluster, policy: RangePolicy = RangePolicy()) -> ABY3SecureAverage:
        return cls(cluster.compute_servers[:3], cluster.model_owner, policy)

    # tfe's ABY3._share: two seeds to two servers each, the masked secret to two servers
    shared_seeds, shared_vectors = 4, 2

    @property
    def factory(self):
        return self.protocol.default_factory

    def make_protocol(self) -> tfe.protocol.Protocol:
        return _quietly(lambda: tfe.protocol.ABY3(*(server.name for server in self.servers), fixedpoint_config=SUM_RING))
