"""A stop asked for by Ctrl-C or SIGTERM, honoured between rounds even when its `KeyboardInterrupt` was lost.

Python raises the `KeyboardInterrupt` of a signal wherever the main thread happens to be. Inside a
garbage-collection callback or a finalizer (TF and JAX register both) it is printed as "Exception
ignored" and dropped, and training would go on holding the driver's lock. The handler therefore
also records the request, and the round loop raises it again before the next round.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_requested = threading.Event()


def install(command: str) -> None:
    """`fl COMMAND` stops on SIGTERM like on Ctrl-C: one line, exit 130; SIGINT stays ignored where it was."""
    signal.signal(signal.SIGTERM, _request)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # POSIX: a background job inherits SIGINT ignored; keep it so
        print(
            f"fl {command}: SIGINT is ignored (started as a background job), so Ctrl-C will not stop this run; "
            f"stop it with SIGTERM (kill {os.getpid()})",
            file=sys.stderr,
        )
    else:
        signal.signal(signal.SIGINT, _request)


def raise_if_requested() -> None:
    """Raise the `KeyboardInterrupt` of a stop asked for earlier, whether or not its first raise got through."""
    if _requested.is_set():
        raise KeyboardInterrupt


def _request(signum: int, frame) -> None:
    _requested.set()
    raise KeyboardInterrupt
