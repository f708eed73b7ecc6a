"""The keystream's rate: the compute floor of a secure round once transfers overlap.

additive expands every mask from a 32-byte seed, twice (the owner subtracts it, its
holder adds it), so a round of n owners and s parameters in a ring of b bytes expands
2 (n - 1) s b bytes of keystream on each owner. Our op (ChaCha20, libsodium) is set
against AES-128-CTR and ChaCha20 from OpenSSL's libcrypto (through `cryptography`),
each on one core of this host.
"""

from __future__ import annotations

import os
import time

import tensorflow as tf
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fl import secure_random

MEASURED_BYTES = 64 * 2**20
REPEATS = 5


def _best_rate(run, repeats: int = REPEATS) -> float:
    """Bytes a second of the fastest of `repeats` runs (the least disturbed by the rest of the machine)."""
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - started)
    return MEASURED_BYTES / fastest


def op_rate() -> float:
    """Our op's keystream, as additive uses it: int32 values over the whole ring."""
    secure_random.load()
    with tf.device("/job:localhost/replica:0/task:0/device:CPU:0"):
        seed = secure_random.secure_seed()
        return _best_rate(lambda: secure_random.seeded_full_range([MEASURED_BYTES // 4], seed, tf.int32).numpy())


def openssl_rate(algorithm: algorithms.AES | algorithms.ChaCha20, mode: modes.Mode | None) -> float:
    zeros = bytes(MEASURED_BYTES)
    return _best_rate(lambda: Cipher(algorithm, mode).encryptor().update(zeros))


def rates() -> dict[str, float]:
    """Bytes a second on one core, by keystream generator."""
    return {
        "fl ChaCha20 op (libsodium)": op_rate(),
        "OpenSSL AES-128-CTR": openssl_rate(algorithms.AES(os.urandom(16)), modes.CTR(os.urandom(16))),
        "OpenSSL ChaCha20": openssl_rate(algorithms.ChaCha20(os.urandom(32), os.urandom(16)), None),
    }


def round_keystream_bytes(owners: int, size: int, element_bytes: int) -> int:
    """Keystream one owner expands in an additive round: each mask it makes and each seed it holds."""
    return 2 * (owners - 1) * size * element_bytes


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
