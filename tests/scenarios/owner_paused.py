"""Run inside the driver container; the test pauses data-owner-1 (`docker pause`) meanwhile.

Protocol: trains one round with a quorum of 2, prints READY and waits for /tmp/go-1 (the
owner is paused by then). Fits two more rounds with the quorum and prints QUORUM and a
report; then one round of a second run that needs every owner, and prints STRICT and how it
failed. Waits for /tmp/go-2 (the owner is unpaused), fits the quorum run round by round, up
to 5, until the owner takes part again, and prints RESUMED and a report.
"""

import json
import time
from pathlib import Path

import numpy as np

import fl
from fl.aggregation.registry import make_aggregation
from fl.errors import FLError
from fl.train import build_classifier

VICTIM = "data-owner-1"
ROUND_TIMEOUT = 20.0


def wait_for(signal: str) -> None:
    while not Path(f"/tmp/{signal}").exists():
        time.sleep(0.2)


def rounds(federated: fl.FederatedLearning, since: int) -> list[dict]:
    return [{"participants": r.participants, "dropped": r.dropped} for r in federated.round_results[since:]]


cluster = fl.connect("/etc/fl/cluster.json")
train_data, test_data = fl.owner_sources(cluster)
aggregation = make_aggregation("additive", cluster)
quorum = fl.FederatedLearning(cluster.model_owner, aggregation, rounds=fl.RoundPolicy(ROUND_TIMEOUT, min_owners=2))
with quorum:
    model = build_classifier((8, 8, 1), 10, hidden_units=32, learning_rate=0.3)
model.fit(train_data, epochs=1, verbose=0)
print("READY", flush=True)
wait_for("go-1")
started = time.monotonic()
model.fit(train_data, epochs=2, verbose=0)
print("QUORUM " + json.dumps({"rounds": rounds(quorum, 1), "seconds": time.monotonic() - started}), flush=True)

strict = fl.FederatedLearning(cluster.model_owner, aggregation, rounds=fl.RoundPolicy(ROUND_TIMEOUT))
with strict:
    strict_model = build_classifier((8, 8, 1), 10, hidden_units=32, learning_rate=0.3)
before = [w.numpy() for w in strict_model.weights]
started = time.monotonic()
try:
    strict_model.fit(train_data, epochs=1, verbose=0)
    error = None
except FLError as failure:
    error = f"{type(failure).__name__}: {failure}"
unchanged = all(np.array_equal(a, w.numpy()) for a, w in zip(before, strict_model.weights))
report = {"error": error, "seconds": time.monotonic() - started, "weights_unchanged": unchanged}
print("STRICT " + json.dumps(report), flush=True)

wait_for("go-2")
done = len(quorum.round_results)
while len(quorum.round_results) - done < 5:
    model.fit(train_data, epochs=1, verbose=0)
    if VICTIM in quorum.round_results[-1].participants:
        break
_, accuracy = model.evaluate(test_data, verbose=0)
print("RESUMED " + json.dumps({"rounds": rounds(quorum, done), "accuracy": accuracy}), flush=True)
