"""A Ctrl-C that arrives while a gc callback runs, then a round boundary; prints what the rounds loop would see.

argv[1] is `installed` (fl's stop request handles SIGINT) or `default` (Python's own handler).
"""

import gc
import os
import signal
import sys

from fl import stop_request

if sys.argv[1] == "installed":
    stop_request.install("train")


def ctrl_c_during_collection(phase: str, info: dict) -> None:
    if phase == "start":
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside the callback, whose exceptions are ignored


gc.callbacks.append(ctrl_c_during_collection)
gc.collect()
gc.callbacks.remove(ctrl_c_during_collection)
try:
    stop_request.raise_if_requested()
except KeyboardInterrupt:
    print("stopped at the round boundary")
else:
    print("went on")
