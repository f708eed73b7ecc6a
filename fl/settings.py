"""`fl train`'s settings: one frozen dataclass, each field one flag (fl/cli.py derives them), checked here.

A bad value is refused before anything starts, in one line naming the setting, the value
and the range; the round's own settings come out of it as the dataclasses of fl/policies.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from fl.aggregation.registry import AGGREGATIONS, DEFAULT_AGGREGATION, REGISTRY
from fl.errors import FLError
from fl.policies import (
    ALGORITHMS,
    DEFAULT_MAX_CLIPPED_FRACTION,
    DEFAULT_ROUND_TIMEOUT,
    OUT_OF_RANGE_POLICIES,
    SERVER_OPTIMIZERS,
    WEIGHTINGS,
    DifferentialPrivacy,
    LocalTraining,
    RangePolicy,
    RoundPolicy,
    ServerOptimizer,
    Weighting,
)


def setting(default: Any, help: str, **flag: Any) -> Any:
    """A field and its flag: `flag` holds argparse's choices, type (when the default is None), or flag=False."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass(frozen=True)
class TrainSettings:
    aggregation: str = setting(
        DEFAULT_AGGREGATION, "; ".join(f"{e.name}: {e.summary}" for e in REGISTRY.values()), choices=AGGREGATIONS
    )
    epochs: int = setting(10, "epochs of training (at least 1)")
    rounds_per_epoch: int = setting(1, "federated rounds in an epoch (at least 1)")
    batch_size: int = setting(32, "each owner's batch size (at least 1)")
    local_epochs: int = setting(1, "epochs each owner trains in a round, FedAvg (at least 1)")
    learning_rate: float = setting(0.3, "the owners' SGD learning rate (> 0)")
    hidden_units: int = setting(64, "units of the built-in classifier's hidden layer (at least 1)")
    algorithm: str = setting("fedavg", "fedavg: local epochs; fedsgd: one step a round", choices=ALGORITHMS)
    proximal_mu: float = setting(0.0, "FedProx: mu/2 ||w - w_global||^2 added to each owner's loss (0: off)")
    server_optimizer: str = setting(
        "sgd", "the model owner's update: sgd (FedAvg), momentum (FedAvgM), adam, yogi, adagrad", choices=SERVER_OPTIMIZERS
    )
    server_learning_rate: float = setting(1.0, "the server optimizer's learning rate (sgd with 1: plain FedAvg)")
    weighting: str | None = setting(
        None,
        "weight each owner's update by its examples (FedAvg) or uniformly (default: examples; uniform under DP)",
        choices=WEIGHTINGS,
        type=str,
    )
    max_weight: float = setting(4096.0, "the most examples an owner has in a local epoch (weights are divided by it)")
    value_range: float = setting(32.0, "fixed-point range ±R of update values (> 0)")
    out_of_range: str = setting("clip", "what happens to a value outside ±R", choices=OUT_OF_RANGE_POLICIES)
    max_clipped_fraction: float = setting(
        DEFAULT_MAX_CLIPPED_FRACTION,
        "refuse a round in which an owner had more than this fraction of its update clipped (clip only; in [0, 1])",
    )
    seed: int = setting(0, "seeds the model's initial weights and each round's shuffling")
    verbose: int = setting(1, "", flag=False)
    resume: bool = setting(False, "continue from the last round checkpointed on the model owner (same settings)")
    round_timeout: float = setting(
        DEFAULT_ROUND_TIMEOUT,
        f"seconds a round may take before it fails, naming the players that do not answer (default "
        f"{DEFAULT_ROUND_TIMEOUT:g}); owners deliver their updates within half of it; the model stays unchanged",
    )
    min_owners: int | None = setting(
        None,
        "the quorum: a round averages the owners that delivered by the local-training deadline if at least "
        "this many did, and names the others (default: every owner)",
        type=int,
    )

    dp_noise_multiplier: float | None = setting(
        None,
        "distributed DP: each owner clips and adds its share of Skellam noise of this scale over the clip before "
        "sharing, so only a noised sum is revealed (default: no DP)",
        type=float,
    )
    dp_clip_norm: float | None = setting(
        None,
        f"DP: the L2 norm each owner's update is clipped to (default {DifferentialPrivacy.clip_norm:g})",
        type=float,
    )
    dp_delta: float | None = setting(
        None, f"DP: the delta of (epsilon, delta) (default {DifferentialPrivacy.delta:g})", type=float
    )
    dp_target_epsilon: float | None = setting(
        None, "DP: stop training before a round would spend more than this epsilon", type=float
    )
    dp_central: bool = setting(
        False,
        "central DP instead, the baseline: owners only clip, and the model owner adds Gaussian noise of this scale "
        "once to the sum it is revealed (it sees the un-noised sum)",
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "rounds_per_epoch", "hidden_units"):
            if getattr(self, name) < 1:
                raise FLError(f"--{flag_name(name)} {getattr(self, name)}: must be at least 1")
        if not self.learning_rate > 0:
            raise FLError(f"--learning-rate {self.learning_rate:g}: must be > 0, e.g. 0.3")
        for policy in ("range_policy", "round_policy", "local_training", "server", "weighting_policy", "privacy"):
            getattr(self, policy)  # each policy checks its own fields

    @property
    def range_policy(self) -> RangePolicy:
        return RangePolicy(self.value_range, self.out_of_range, self.max_clipped_fraction)

    @property
    def round_policy(self) -> RoundPolicy:
        return RoundPolicy(self.round_timeout, self.min_owners)

    @property
    def local_training(self) -> LocalTraining:
        return LocalTraining(self.algorithm, self.local_epochs, self.batch_size, self.proximal_mu)

    @property
    def server(self) -> ServerOptimizer:
        return ServerOptimizer(self.server_optimizer, self.server_learning_rate)

    @property
    def weighting_policy(self) -> Weighting:
        default = "uniform" if self.dp_noise_multiplier is not None else "examples"
        return Weighting(self.weighting or default, self.max_weight)

    @property
    def privacy(self) -> DifferentialPrivacy | None:
        given = {name: getattr(self, f"dp_{name}") for name in ("clip_norm", "delta", "target_epsilon", "central")}
        if self.dp_noise_multiplier is None:
            stray = [f"--dp-{flag_name(name)}" for name, value in given.items() if value not in (None, False)]
            if stray:
                raise FLError(f"{', '.join(stray)} without --dp-noise-multiplier: DP is off; give the noise multiplier too")
            return None
        if self.weighting == "examples":
            raise FLError("--weighting examples with --dp-noise-multiplier: DP averages uniformly; drop --weighting")
        return DifferentialPrivacy(
            self.dp_noise_multiplier, **{name: value for name, value in given.items() if value is not None}
        )


# how a run is carried out, not what it computes: a resumed run may change them
RUN_ONLY_SETTINGS = ("epochs", "verbose", "resume", "round_timeout", "min_owners", "dp_target_epsilon")


def flag_name(name: str) -> str:
    return name.replace("_", "-")


def flag_fields() -> list[str]:
    """The settings that are flags, by field name (argparse's dest)."""
    return [f.name for f in fields(TrainSettings) if f.metadata.get("flag", True)]


def flags() -> list[tuple[str, dict[str, Any]]]:
    """(flag, argparse keyword arguments) for every setting that is a flag."""
    derived = []
    for setting_field in fields(TrainSettings):
        meta = dict(setting_field.metadata)
        if not meta.pop("flag", True):
            continue
        default = setting_field.default
        if isinstance(default, bool):
            options = {"action": "store_true", "help": meta["help"]}
        else:
            options = {"type": meta.pop("type", type(default)), "default": default, **meta}
        derived.append((f"--{flag_name(setting_field.name)}", options))
    return derived
