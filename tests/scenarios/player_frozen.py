"""Driver for the frozen-player tests, in its own process (TF allows one cluster per process).

Trains one round, then freezes VICTIM (SIGSTOP) mid-way through the local training of a
two-round fit (owners train 100 local epochs, about 0.8 s of processor time each): once a
data owner, VICTIM itself if it is one, has used 0.2 s of it. Reports how that fit ended,
thaws the victim and fits one more round. With MIN_OWNERS (a quorum) it then fits round
after round, up to 5, until the victim takes part again. Prints one JSON line.

Usage: player_frozen.py STATE_ROOT VICTIM AGGREGATION [MIN_OWNERS]
"""

import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import fl
from fl.aggregation.registry import make_aggregation
from fl.backends.local import StateDir
from fl.errors import FLError
from fl.train import build_classifier

ROUND_TIMEOUT = 30.0
FREEZE_AFTER_CPU_SECONDS = 0.2  # of the watched owner's local training
faulthandler.dump_traceback_later(240, exit=True)  # a hang shows every thread's stack, then ends the run

root, victim, aggregation = sys.argv[1:4]
min_owners = int(sys.argv[4]) if len(sys.argv) > 4 else None
state = StateDir(Path(root))
pids = json.loads(state.pids_file.read_text())
victim_pid = pids[victim]
watched_pid = victim_pid if victim.startswith("data-owner") else pids["data-owner-0"]
cluster = fl.connect(state.cluster_file)
train_data, _ = fl.owner_sources(cluster)
federated = fl.FederatedLearning(
    cluster.model_owner,
    make_aggregation(aggregation, cluster),
    local=fl.LocalTraining(local_epochs=100),
    rounds=fl.RoundPolicy(ROUND_TIMEOUT, min_owners),
)
with federated:
    model = build_classifier((8, 8, 1), 10, hidden_units=32, learning_rate=0.3)
model.fit(train_data, epochs=1, verbose=0)
before = [w.numpy() for w in model.weights]
watcher = subprocess.Popen(
    [
        sys.executable,
        str(Path(__file__).parent / "freeze_when_busy.py"),
        str(watched_pid),
        str(victim_pid),
        str(FREEZE_AFTER_CPU_SECONDS),
    ],
    stdout=subprocess.PIPE,
    text=True,
)
assert watcher.stdout.readline().strip() == "WATCHING"
started = time.monotonic()
try:
    model.fit(train_data, epochs=2, verbose=0)
    error = None
except FLError as failure:
    error = f"{type(failure).__name__}: {failure}"
report = {
    "error": error,
    "seconds": time.monotonic() - started,
    "frozen": watcher.wait() == 0,
    "weights_unchanged": all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights)),
    "rounds": [{"participants": r.participants, "dropped": r.dropped} for r in federated.round_results[1:]],
}
os.kill(victim_pid, signal.SIGCONT)
done = len(federated.round_results)
model.fit(train_data, epochs=1, verbose=0)
report["rounds_after_thaw"] = len(federated.round_results) - done
if min_owners is not None:
    while victim not in federated.round_results[-1].participants and len(federated.round_results) - done < 5:
        model.fit(train_data, epochs=1, verbose=0)
    report["rejoined_after_rounds"] = len(federated.round_results) - done
    report["accuracy"] = model.evaluate(fl.owner_sources(cluster)[1], verbose=0, return_dict=True)["accuracy"]
print(json.dumps(report))
