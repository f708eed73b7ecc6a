"""Flower's rounds for `fl bench`: FedAvg, with or without SecAgg+, timed and byte-counted per round.

A round runs from the strategy's `configure_fit` to the end of its `aggregate_fit`; with
SecAgg+ that spans its four stages (setup, key sharing, masked vectors, unmasking).
Bytes are what each client's replies weigh in Flower's own serialization, counted as
they reach the ServerApp. Results go to the JSON file named by the run config `out`.
"""

import json
import time
from collections import defaultdict

import numpy as np
from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from flower_peer.updates import expected_mean


class ReplyByteCounter:
    """A Grid that also adds up the serialized size of every reply, per sending node."""

    def __init__(self, grid: Grid):
        self._grid = grid
        self.sent_bytes: dict[int, int] = defaultdict(int)

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            objects = get_all_nested_objects(reply).values()
            self.sent_bytes[reply.metadata.src_node_id] += sum(len(item.deflate()) for item in objects)
        return replies


class TimedFedAvg(FedAvg):
    """FedAvg that records each round's latency, bytes per client and error against the true mean."""

    def __init__(self, counter: ReplyByteCounter, expected: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.counter = counter
        self.expected = expected
        self.rounds: list[dict] = []
        self._started = 0.0
        self._bytes_before: dict[int, int] = {}

    def configure_fit(self, server_round, parameters, client_manager):
        self._started = time.perf_counter()
        self._bytes_before = dict(self.counter.sent_bytes)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        aggregated = super().aggregate_fit(server_round, results, failures)
        seconds = time.perf_counter() - self._started
        error = None if aggregated[0] is None else np.max(np.abs(parameters_to_ndarrays(aggregated[0])[0] - self.expected))
        sent = {node: total - self._bytes_before.get(node, 0) for node, total in self.counter.sent_bytes.items()}
        self.rounds.append(
            {
                "seconds": seconds,
                "clients": len(results),
                "failures": len(failures),
                "sent_bytes_per_client": sorted(sent.values()),
                "max_abs_error": None if error is None else float(error),
            }
        )
        return aggregated


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    size, rounds, clients = int(config["vector-size"]), int(config["rounds"]), int(config["clients"])
    counter = ReplyByteCounter(grid)
    strategy = TimedFedAvg(
        counter,
        expected_mean(clients, size),
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=clients,
        min_available_clients=clients,
        initial_parameters=ndarrays_to_parameters([np.zeros(size, np.float32)]),
    )
    # SecAgg+ over the complete graph (num_shares=1.0: every client shares with all the others)
    # and an honest majority to reconstruct: the SecAgg setting. Every client weighs 1 here; the default
    # max_weight of 1000 would scale updates down 1000-fold before quantizing them.
    secure = None
    if config["secure"]:
        secure = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=clients // 2 + 1, max_weight=1.0)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
    DefaultWorkflow(fit_workflow=secure)(counter, legacy)
    with open(str(config["out"]), "w") as out:
        json.dump({"rounds": strategy.rounds}, out)
