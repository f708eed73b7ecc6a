"""Driver for the player-loss test, run in its own process (TF allows one cluster per process).

Trains one round, kills a data owner, tries a round (must fail naming it, weights
unchanged), restarts the owner, reconnects, and trains again. Prints a JSON report.
"""

import json
import sys
import time

import numpy as np

import fl
from fl.aggregation.registry import make_aggregation
from fl.backends import local
from fl.backends.local import StateDir
from fl.errors import FLError
from fl.train import build_classifier


def main(state_root: str, victim: str) -> None:
    state = StateDir(__import__("pathlib").Path(state_root))
    cluster = fl.connect(state.cluster_file)
    train_data, _ = fl.owner_sources(cluster)
    federated = fl.FederatedLearning(cluster.model_owner, make_aggregation("additive", cluster))
    with federated:
        model = build_classifier((8, 8, 1), 10, hidden_units=32, learning_rate=0.3)
    model.fit(train_data, epochs=1, verbose=0)
    report = {}
    local.stop_player(state, victim)
    before = [w.numpy() for w in model.weights]
    started = time.monotonic()
    try:
        model.fit(train_data, epochs=1, verbose=0)
        report["error"] = None
    except FLError as error:
        report["error"] = f"{type(error).__name__}: {error}"
    report["failed_after_seconds"] = time.monotonic() - started
    report["weights_unchanged"] = all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
