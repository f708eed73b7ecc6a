"""Run inside the driver container; the test stops and restarts a data owner meanwhile.

Protocol: prints PAUSED after the first round of a 3-epoch fit and waits until the test
creates /tmp/go-1 (the owner is stopped by then); prints FAILED and a JSON report of the
failed fit, waits for /tmp/go-2 (the owner is back); trains on, prints RESUMED and a report.
"""

import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

import fl
from fl.aggregation.registry import make_aggregation
from fl.errors import FLError
from fl.train import build_classifier


def wait_for(signal: str) -> None:
    while not Path(f"/tmp/{signal}").exists():
        time.sleep(0.2)


class PauseAfterFirstRound(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.weights = [w.numpy() for w in self.model.weights]
            print("PAUSED", flush=True)
            wait_for("go-1")


cluster = fl.connect("/etc/fl/cluster.json")
train_data, test_data = fl.owner_sources(cluster)
with fl.FederatedLearning(cluster.model_owner, make_aggregation("additive", cluster)) as federated:
    model = build_classifier((8, 8, 1), 10, hidden_units=32, learning_rate=0.3)
pause = PauseAfterFirstRound()
try:
    model.fit(train_data, epochs=3, verbose=0, callbacks=[pause])
    error = None
except FLError as failure:
    error = f"{type(failure).__name__}: {failure}"
failed = {
    "error": error,
    "rounds_done": len(federated.round_results),
    "weights_unchanged": all(np.array_equal(a, w.numpy()) for a, w in zip(pause.weights, model.weights)),
}
print("FAILED " + json.dumps(failed), flush=True)
wait_for("go-2")
started = time.monotonic()
history = model.fit(train_data, epochs=3, verbose=0)
_, accuracy = model.evaluate(test_data, verbose=0)
print("RESUMED " + json.dumps({"loss": history.history["loss"], "accuracy": accuracy, "seconds": time.monotonic() - started}))
