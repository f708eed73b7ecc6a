"""Every aggregation the testbed offers, by name: the compute servers it needs and the class that wires it.

The CLI, `fl train`, `fl bench` and the cluster-file check all read this table, so a new
protocol is its own module (a subclass of `Aggregation` with `from_cluster`) and one line
here. It imports no TensorFlow: commands that only list or check names stay fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fl.errors import ClusterConfigError
from fl.policies import RangePolicy

if TYPE_CHECKING:
    from fl.aggregation.base import Aggregation
    from fl.cluster import Cluster


@dataclass(frozen=True)
class Registration:
    name: str
    compute_servers: int  # players with role compute_server the cluster must have
    implementation: str  # "module:Class", imported only when the aggregation is wired
    summary: str

    def check(self, cluster: Cluster) -> None:
        have = len(cluster.compute_servers)
        if have < self.compute_servers:
            raise ClusterConfigError(
                f"aggregation {self.name!r} needs {self.compute_servers} compute servers but the cluster has {have}: "
                "add players with role 'compute_server' (fl up starts 3)"
            )

    def wire(self, cluster: Cluster, policy: RangePolicy = RangePolicy()) -> Aggregation:
        """The aggregation on this cluster's players, with its range policy."""
        self.check(cluster)
        module, name = self.implementation.split(":")
        return getattr(importlib.import_module(module), name).from_cluster(cluster, policy)


REGISTRY = {
    registration.name: registration
    for registration in (
        Registration("additive", 0, "fl.aggregation.additive:AdditiveSecureAverage", "additive sharing among the owners"),
        Registration("pond", 3, "fl.aggregation.tfe_protocols:PondSecureAverage", "tfe Pond on two servers and a producer"),
        Registration("aby3", 3, "fl.aggregation.tfe_protocols:ABY3SecureAverage", "tfe ABY3 on three servers"),
        Registration("plaintext", 0, "fl.aggregation.plaintext:PlaintextAverage", "NOT PRIVATE: the baseline"),
    )
}
AGGREGATIONS = tuple(REGISTRY)
DEFAULT_AGGREGATION = "additive"


def registration(name: str) -> Registration:
    if name not in REGISTRY:
        raise ClusterConfigError(f"unknown aggregation {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def make_aggregation(name: str, cluster: Cluster, policy: RangePolicy = RangePolicy()) -> Aggregation:
    return registration(name).wire(cluster, policy)
