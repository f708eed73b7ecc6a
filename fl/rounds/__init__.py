"""One federated round, orchestrated by the driver in two compiled stages.

- `schedule.py`: when and with whom a round runs: the owners' training calls at once, the
  local-training deadline, the quorum, probes of the players, the round's deadline.
- `stages.py`: what a round computes, each stage traced once into a graph function: an
  owner's local training, and the aggregation stage (range check, weighting, sharing,
  secure sum, reveal, division, then the model update).
- `fl/server_update.py`: the model update itself, a server optimizer on the model owner.
"""

from fl.rounds.schedule import RoundListener, RoundResult, RoundRunner, quorum
from fl.rounds.stages import CompiledAverage, Report

__all__ = ["CompiledAverage", "Report", "RoundListener", "RoundResult", "RoundRunner", "quorum"]
