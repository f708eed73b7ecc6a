"""Data: loaders, the simulation-only split helper, and owner-side pipelines."""

from fl.data.sources import OwnerData, owner_sources
from fl.data.split import split_among_players

__all__ = ["OwnerData", "owner_sources", "split_among_players"]
