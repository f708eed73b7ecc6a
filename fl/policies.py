"""The small settings a federated run is made of, each checked once where it is defined.

They import no TensorFlow, so the CLI builds its flags from them (fl/settings.py) and
refuses a bad value before anything starts; the round, the aggregations and the model
owner's update take them whole instead of loose parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from fl.errors import FLError
from fl.phases import DEFAULT_ROUND_TIMEOUT

OUT_OF_RANGE_POLICIES = ("clip", "refuse")
DEFAULT_MAX_CLIPPED_FRACTION = 0.01
WEIGHTINGS = ("examples", "uniform")
SERVER_OPTIMIZERS = ("sgd", "momentum", "adam", "yogi", "adagrad")
PARTITIONS = ("iid", "dirichlet")  # SIMULATION ONLY: how fl split and fl up share a public data set


@dataclass(frozen=True)
class RangePolicy:
    """The fixed-point range an aggregation accepts, and what happens to values outside it (fl/aggregation/base.py)."""

    value_range: float = 32.0
    out_of_range: str = "clip"
    max_clipped_fraction: float = DEFAULT_MAX_CLIPPED_FRACTION

    def __post_init__(self) -> None:
        if self.out_of_range not in OUT_OF_RANGE_POLICIES:
            raise FLError(f"out_of_range {self.out_of_range!r}: use one of {', '.join(OUT_OF_RANGE_POLICIES)}")
        if not self.value_range > 0:
            raise FLError(f"value_range {self.value_range:g}: the range ±R needs R > 0, e.g. 32")
        if not 0 <= self.max_clipped_fraction <= 1:
            raise FLError(f"max_clipped_fraction {self.max_clipped_fraction:g}: a fraction in [0, 1], e.g. 0.01")


@dataclass(frozen=True)
class RoundPolicy:
    """How long a round may take and how few owners it may average (fl/rounds/schedule.py)."""

    round_timeout: float = DEFAULT_ROUND_TIMEOUT
    min_owners: int | None = None  # the quorum; None: every owner in every round

    def __post_init__(self) -> None:
        if not self.round_timeout > 0:
            raise FLError(f"round_timeout {self.round_timeout:g}: seconds > 0, e.g. {DEFAULT_ROUND_TIMEOUT:g}")


@dataclass(frozen=True)
class Weighting:
    """How owners' updates count in the average: by examples (FedAvg's weights) or each the same.

    An owner's weight is its examples in one local epoch (the sum of its sample weights; FedSGD:
    in its one step) divided by the public `max_weight`, so it lies in [0, 1] and a weighted update
    stays inside the value range: the ring that holds unweighted updates holds weighted ones. A
    round in which an owner had more than `max_weight` examples is refused, naming the owner.
    """

    mode: str = "examples"
    max_weight: float = 4096.0

    def __post_init__(self) -> None:
        if self.mode not in WEIGHTINGS:
            raise FLError(f"weighting {self.mode!r}: use one of {', '.join(WEIGHTINGS)}")
        if not self.max_weight >= 1:
            raise FLError(f"max_weight {self.max_weight:g}: the most examples an owner has in a local epoch, >= 1")


@dataclass(frozen=True)
class ServerOptimizer:
    """The model owner's update from the averaged delta, taken as a pseudo-gradient (Reddi et al. 2021).

    `sgd` with learning rate 1 is FedAvg; `momentum` is FedAvgM; `adam`, `yogi`, `adagrad`
    are FedAdam, FedYogi, FedAdagrad, with `epsilon` their adaptivity (Reddi et al.'s tau).
    """

    name: str = "sgd"
    learning_rate: float = 1.0
    momentum: float = 0.9
    beta_1: float = 0.9
    beta_2: float = 0.99
    epsilon: float = 1e-3

    def __post_init__(self) -> None:
        if self.name not in SERVER_OPTIMIZERS:
            raise FLError(f"server optimizer {self.name!r}: use one of {', '.join(SERVER_OPTIMIZERS)}")
        if not self.learning_rate > 0:
            raise FLError(f"server learning rate {self.learning_rate:g}: > 0, e.g. 1 for sgd or 0.01 for adam")
        for name in ("momentum", "beta_1", "beta_2"):
            if not 0 <= getattr(self, name) < 1:
                raise FLError(f"server {name} {getattr(self, name):g}: in [0, 1), e.g. 0.9")
        if not self.epsilon > 0:
            raise FLError(f"server epsilon {self.epsilon:g}: > 0, e.g. 1e-3")


ALGORITHMS = ("fedavg", "fedsgd")


@dataclass(frozen=True)
class LocalTraining:
    """What each data owner does in a round: FedAvg's local epochs (or FedSGD's one step), and FedProx's `proximal_mu`.

    `batch_size` batches the testbed's own shards (`OwnerData`); a pipeline function batches its own dataset.
    """

    algorithm: str = "fedavg"
    local_epochs: int = 1
    batch_size: int = 32
    proximal_mu: float = 0.0

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise FLError(f"algorithm {self.algorithm!r}: use one of {', '.join(ALGORITHMS)}")
        if self.local_epochs < 1:
            raise FLError(f"local_epochs {self.local_epochs}: each owner trains at least 1 epoch a round")
        if self.batch_size < 1:
            raise FLError(f"batch_size {self.batch_size}: at least 1 example a batch, e.g. 32")
        if not self.proximal_mu >= 0:
            raise FLError(f"proximal_mu {self.proximal_mu:g}: FedProx's mu is >= 0 (0: plain FedAvg), e.g. 0.01")

    @property
    def local_steps(self) -> int | None:
        """FedSGD takes one step a round; FedAvg runs whole epochs."""
        return 1 if self.algorithm == "fedsgd" else None


@dataclass(frozen=True)
class DifferentialPrivacy:
    """Owner-level differential privacy of the revealed sum: each owner clips to `clip_norm` and adds its share of
    noise of standard deviation `noise_multiplier` x (the clip, on the lattice) over the quorum (fl/privacy/).

    `central`: the baseline distributed DP is measured against. Owners only clip, and the model owner adds
    Gaussian noise of standard deviation `noise_multiplier` x `clip_norm` once to the revealed sum, so it is
    trusted with the un-noised sum. The average is uniform under DP: a weight would let one owner's update
    move the sum by more than the clip.
    """

    noise_multiplier: float
    clip_norm: float = 1.0
    delta: float = 1e-5
    target_epsilon: float | None = None
    central: bool = False

    @property
    def name(self) -> str:
        return "central DP" if self.central else "distributed DP"

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise FLError(f"--dp-noise-multiplier {self.noise_multiplier:g}: the noise's scale over the clip, > 0, e.g. 1")
        if not self.clip_norm > 0:
            raise FLError(f"--dp-clip-norm {self.clip_norm:g}: the largest L2 norm an owner's update keeps, > 0, e.g. 1")
        if not 0 < self.delta < 1:
            raise FLError(f"--dp-delta {self.delta:g}: a probability in (0, 1), below 1/owners, e.g. 1e-5")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise FLError(f"--dp-target-epsilon {self.target_epsilon:g}: a budget > 0, e.g. 10")
