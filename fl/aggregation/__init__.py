"""Aggregation functionalities: how the data owners' updates become one average."""

from fl.aggregation.additive import AdditiveSecureAverage
from fl.aggregation.base import Aggregation
from fl.aggregation.plaintext import PlaintextAverage
from fl.aggregation.tfe_protocols import ABY3SecureAverage, PondSecureAverage

__all__ = ["ABY3SecureAverage", "AdditiveSecureAverage", "Aggregation", "PlaintextAverage", "PondSecureAverage"]
