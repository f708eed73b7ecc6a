"""HAProxy's call log, relayed to the container's stdout without losing lines.

HAProxy writes its log without blocking: logging straight to stdout, a line is dropped whenever
the pipe to Docker's log reader is full, which a loaded host makes happen in a round's burst
of calls. The call log is the audit of who called whom (the trust-boundary tests match every
call on both sides), so HAProxy sends each line as a datagram to this relay's loopback port instead; one
thread drains the socket into memory as fast as lines come, the other writes them to stdout, where
a slow reader only makes it wait.
"""

from __future__ import annotations

import queue
import socket
import threading
from typing import BinaryIO

RECEIVE_BUFFER_BYTES = 4 << 20  # absorbs a burst while the draining thread is not scheduled
DATAGRAM_BYTES = 65536
SO_RCVBUFFORCE = 33  # Linux: SO_RCVBUF past rmem_max, for CAP_NET_ADMIN; Python names no constant for it


def bind(port: int) -> socket.socket:
    """The relay's UDP socket on loopback: a Unix datagram socket would queue only net.unix.max_dgram_qlen (10)
    lines, UDP queues as many bytes as the receive buffer holds."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
    except PermissionError:  # without CAP_NET_ADMIN: as much as the kernel's rmem_max allows
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    listener.bind(("127.0.0.1", port))
    return listener


def relay(listener: socket.socket, output: BinaryIO) -> None:
    """Forever: every datagram on `listener` to `output` as one line, in arrival order."""
    lines: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def drain() -> None:
        while True:
            lines.put(listener.recv(DATAGRAM_BYTES))

    threading.Thread(target=drain, name="log-drain", daemon=True).start()
    while True:
        line = lines.get()
        output.write(line if line.endswith(b"\n") else line + b"\n")
        if lines.empty():
            output.flush()
