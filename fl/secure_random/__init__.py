"""Secure randomness for TF Encrypted on the installed TensorFlow.

tf-encrypted 0.9.1 only ships its `secure_random` ops for TF 2.9.1; without them
its protocols crash or quietly fall back to `tf.random`. We build our own op
library (ChaCha20 keystreams from OpenSSL, seeds from OS entropy), load it in the driver and in every
player server, and hand it to tfe. Secure aggregations fail closed when it is
missing unless insecure randomness was explicitly allowed.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from fl.errors import InsecureRandomnessError

logger = logging.getLogger(__name__)

SEED_WORDS = 8

_ops: types.ModuleType | None = None
_insecure_allowed = False


def load() -> types.ModuleType:
    """Load the op library into this process (idempotent) and hand it to tfe."""
    global _ops
    if _ops is None:
        from fl.secure_random.build import library_path

        path = library_path()
        if not Path(path).exists():
            raise InsecureRandomnessError(
                f"secure-random op library {path} is missing: build it with `make install` "
                "(or `python -m fl.secure_random.build`)"
            )
        _ops = tf.load_op_library(str(path))
        _install_into_tfe(_ops)
    return _ops


def try_load() -> bool:
    """Load the ops if they are built; report whether secure randomness is available."""
    try:
        load()
    except (InsecureRandomnessError, tf.errors.NotFoundError) as error:
        logger.error("secure randomness unavailable: %s", error)
        return False
    return True


def allow_insecure_randomness() -> None:
    """Experiments only: let secure protocols run on tf.random (NOT cryptographically secure)."""
    global _insecure_allowed
    _insecure_allowed = True
    logger.warning(
        "!!! INSECURE RANDOMNESS ALLOWED: secret shares and masks may be predictable. "
        "Never use --insecure-randomness with real data. !!!"
    )


def available() -> bool:
    return _ops is not None


def require() -> None:
    """Fail closed: secure protocols call this before they run."""
    if _ops is None and not _insecure_allowed:
        raise InsecureRandomnessError(
            "secure randomness is not loaded, so secure aggregation refuses to run: "
            "build the op with `make install`, or pass --insecure-randomness for experiments"
        )


def secure_seed() -> tf.Tensor:
    """A fresh 256-bit seed (int32[8]) from the entropy of the device in scope."""
    require()
    if _ops is None:
        return tf.random.uniform([SEED_WORDS], tf.int32.min, tf.int32.max, dtype=tf.int32)
    return _ops.fl_secure_seed()


def seeded_full_range(shape, seed: tf.Tensor, dtype=tf.int64) -> tf.Tensor:
    """ChaCha20 expansion of `seed` into values uniform over the whole range of `dtype`."""
    require()
    if _ops is None:
        return tf.random.stateless_uniform(shape, tf.cast(seed[:2], tf.int64), minval=None, maxval=None, dtype=dtype)
    zero = tf.zeros([], dtype=dtype)
    return _ops.fl_secure_seeded_random_uniform(shape, seed, zero, zero)


def mask(values: tf.Tensor, added: Sequence[tf.Tensor] = (), subtracted: Sequence[tf.Tensor] = ()) -> tf.Tensor:
    """`values` plus the full-range expansion of each `added` seed, minus that of each `subtracted` one
    (wrapping in the integer ring of `values`), in one pass: no keystream is stored as a tensor."""
    require()
    if _ops is None:
        for seeds, sign in ((added, 1), (subtracted, -1)):
            for seed in seeds:
                values = values + sign * seeded_full_range(values.shape, seed, values.dtype)
        return values
    return _ops.fl_secure_mask(values, _seed_rows(added), _seed_rows(subtracted))


def uniform(shape, maxval: int, dtype: tf.DType = tf.int32) -> tf.Tensor:
    """Integers uniform in [0, maxval), from a fresh ChaCha20 key; no fallback (see `skellam`)."""
    ops = _required_for_privacy("sampling")
    return ops.fl_secure_random_uniform(shape, tf.constant(0, dtype), tf.constant(maxval, dtype))


def skellam(shape, mean: float, dtype=tf.int64) -> tf.Tensor:
    """Poisson(mean) - Poisson(mean) per element, from a fresh ChaCha20 key: the noise of distributed DP.

    No fallback, not even with insecure randomness allowed: noise from a seeded generator is no privacy.
    """
    return _required_for_privacy("noise").fl_secure_skellam(shape, tf.constant(mean, tf.float64), dtype=dtype)


def _required_for_privacy(use: str) -> types.ModuleType:
    """The op library, or the refusal: DP has no fallback, not even with insecure randomness allowed."""
    if _ops is None:
        raise InsecureRandomnessError(
            f"differential privacy needs the secure-random op for its {use}: build it with `make install`"
        )
    return _ops


def _seed_rows(seeds: Sequence[tf.Tensor]) -> tf.Tensor:
    return tf.stack(seeds) if seeds else tf.zeros([0, SEED_WORDS], tf.int32)


def _install_into_tfe(ops: types.ModuleType) -> None:
    """Expose our ops under the names tf_encrypted's secure_random module calls."""
    from tf_encrypted.operations.secure_random import secure_random as tfe_secure_random

    tfe_secure_random.secure_random_module = types.SimpleNamespace(
        secure_seed=lambda name=None: ops.fl_secure_seed(name=name),
        secure_seeded_random_uniform=ops.fl_secure_seeded_random_uniform,
        secure_random_uniform=ops.fl_secure_random_uniform,
    )
