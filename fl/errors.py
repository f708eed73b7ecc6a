"""The errors users see: each says what is wrong and how to fix it, in one line."""

from __future__ import annotations


def first_line(message: str | None) -> str:
    """The first line of an underlying (e.g. TensorFlow) message, short enough to quote in a one-line error."""
    lines = (message or "").strip().splitlines()
    return lines[0][:300] if lines else "unknown error"


def last_line(message: str | None) -> str:
    """The last line of a traced-function error (Keras puts what went wrong at the end), for a one-line error."""
    lines = [line.strip() for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unknown error"


class FLError(Exception):
    """Base class of every error FL Testbed raises on purpose."""


class ClusterConfigError(FLError):
    """The cluster file is missing, malformed or inconsistent."""


class PlayerUnreachableError(FLError):
    """A player's TF server does not answer."""


class InsecureRandomnessError(FLError):
    """Secure randomness is unavailable and the protocol refuses to run without it."""


class LocalityError(FLError):
    """Something was created on the wrong player (e.g. a model built outside FederatedLearning)."""


class UpdateMismatchError(FLError):
    """Data owners produced updates that cannot be aggregated together."""


class RangeError(FLError):
    """An update lies outside the declared fixed-point range and the policy is to refuse."""


class DeadlineExceededError(FLError):
    """A round (or an owner's part of it) did not finish within its deadline."""


class RoundFailedError(FLError):
    """A training round failed; the model owner's weights were left unchanged."""
