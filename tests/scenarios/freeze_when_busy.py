"""Freezes VICTIM (SIGSTOP) once WATCHED has used CPU_SECONDS of processor time from now.

A freeze timed by the watched owner's own progress lands mid-way through its local training
however fast or loaded the machine is, where a wall-clock timer may fire after the owner
has delivered. A process of its own, so that nothing in the driver's process can delay it.
Prints WATCHING once it has read where WATCHED starts, and exits 1 if the freeze never came.

Usage: freeze_when_busy.py WATCHED_PID VICTIM_PID CPU_SECONDS
"""

import os
import signal
import sys
import time
from pathlib import Path

GIVE_UP_AFTER = 120.0  # seconds
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime and stime (fields 14 and 15 of proc(5))


watched, victim, budget = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
start = cpu_seconds(watched)
print("WATCHING", flush=True)
give_up = time.monotonic() + GIVE_UP_AFTER
while cpu_seconds(watched) - start < budget:
    if time.monotonic() > give_up:
        sys.exit(1)
    time.sleep(0.005)
os.kill(victim, signal.SIGSTOP)
