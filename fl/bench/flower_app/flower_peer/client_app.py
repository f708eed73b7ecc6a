"""A client whose round is only to hand over its update, so the round measures aggregation alone."""

from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from flower_peer.updates import client_update


class UpdateClient(NumPyClient):
    def __init__(self, update):
        self.update = update

    def fit(self, parameters, config):
        return [self.update], 1, {}


def client_fn(context: Context):
    update = client_update(int(context.node_config["partition-id"]), int(context.run_config["vector-size"]))
    return UpdateClient(update).to_client()


def secaggplus_when_requested(message, context, call_next):
    """SecAgg+ for the rounds its workflow drives; secaggplus_mod alone would reject a plain FedAvg fit."""
    if RECORD_KEY_CONFIGS in message.content.config_records:
        return secaggplus_mod(message, context, call_next)
    return call_next(message, context)


app = ClientApp(client_fn=client_fn, mods=[secaggplus_when_requested])
