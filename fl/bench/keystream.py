"""The keystream's rate: the compute floor of a secure round once transfers overlap.

additive expands one mask per pair of owners from a 32-byte seed, twice (the first of
the pair subtracts it, the other adds it), so a round of n owners and s parameters in
a ring of b bytes expands (n - 1) s b bytes of keystream on each owner. Our op
(ChaCha20 from OpenSSL, folded into the update as it is made) is set against
AES-128-CTR and ChaCha20 from OpenSSL's libcrypto (through `cryptography`), each on
one core of this host.
"""

from __future__ import annotations

import os
import time

import tensorflow as tf
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fl import secure_random

MEASURED_BYTES = 64 * 2**20
REPEATS = 5
FOLDED_KEYSTREAMS = 4


def _best_rate(run, measured_bytes: int = MEASURED_BYTES, repeats: int = REPEATS) -> float:
    """Bytes a second of the fastest of `repeats` runs (the least disturbed by the rest of the machine)."""
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - started)
    return measured_bytes / fastest


def op_rate() -> float:
    """Our op as additive uses it: keystreams folded into an int32 vector, several in one pass."""
    secure_random.load()
    with tf.device("/job:localhost/replica:0/task:0/device:CPU:0"):
        seeds = [secure_random.secure_seed() for _ in range(FOLDED_KEYSTREAMS)]
        values = tf.zeros([MEASURED_BYTES // 4], tf.int32)
        folded = tf.function(lambda vector: secure_random.mask(vector, added=seeds)[0])
        folded(values)
        return _best_rate(lambda: folded(values).numpy(), FOLDED_KEYSTREAMS * MEASURED_BYTES)


def openssl_rate(algorithm: algorithms.AES | algorithms.ChaCha20, mode: modes.Mode | None) -> float:
    zeros = bytes(MEASURED_BYTES)
    return _best_rate(lambda: Cipher(algorithm, mode).encryptor().update(zeros))


def rates() -> dict[str, float]:
    """Bytes a second on one core, by keystream generator."""
    return {
        "fl ChaCha20 op (OpenSSL), folded": op_rate(),
        "OpenSSL AES-128-CTR": openssl_rate(algorithms.AES(os.urandom(16)), modes.CTR(os.urandom(16))),
        "OpenSSL ChaCha20": openssl_rate(algorithms.ChaCha20(os.urandom(32), os.urandom(16)), None),
    }


def round_keystream_bytes(owners: int, size: int, element_bytes: int) -> int:
    """Keystream one owner expands in an additive round: one mask per peer, made or held."""
    return (owners - 1) * size * element_bytes


def markdown(measured: dict[str, float], owners: int, size: int, element_bytes: int) -> str:
    expanded = round_keystream_bytes(owners, size, element_bytes)
    lines = [
        "## Keystream: the compute floor",
        "",
        f"An additive round of {owners} owners at {size:,} parameters ({8 * element_bytes}-bit ring) expands "
        f"{expanded:,} bytes of keystream on each owner.",
        "",
        "| generator | GB/s on one core | seconds per round |",
        "|---|---:|---:|",
    ]
    for name, rate in measured.items():
        lines.append(f"| {name} | {rate / 1e9:.2f} | {expanded / rate:.4f} |")
    return "\n".join(lines) + "\n"
