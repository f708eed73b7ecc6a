"""Build the secure-random op library against the installed TensorFlow.

Run as `python -m fl.secure_random.build`; needs g++ and the headers of libsodium and OpenSSL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("secure_random_ops.cc")


def library_path() -> Path:
    """Where the library for this TensorFlow version lives (one per TF version)."""
    import tensorflow as tf

    return Path(__file__).with_name("_lib") / f"fl_secure_random_tf{tf.__version__}.so"


def build(force: bool = False) -> Path:
    import tensorflow as tf

    target = library_path()
    if target.exists() and not force and target.stat().st_mtime >= SOURCE.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "g++",
        "-O2",
        "-shared",
        "-fPIC",
        str(SOURCE),
        "-o",
        str(target),
        *tf.sysconfig.get_compile_flags(),
        # before TensorFlow's own library, which exports BoringSSL's EVP_* functions: the op's
        # calls bind to the first library that defines them, and must reach OpenSSL's
        "-lcrypto",
        "-lsodium",
        *tf.sysconfig.get_link_flags(),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"building {target.name} failed (need g++, libsodium-dev and libssl-dev):\n{result.stderr[-4000:]}")
    return target


if __name__ == "__main__":
    print(build(force="--force" in sys.argv))
