"""fl/mesh/log_relay.py: a burst of HAProxy's log lines reaches stdout whole while stdout's reader is slow."""

import select
import socket
import subprocess
import sys
import threading
import time

RELAY = "import sys; from fl.mesh import log_relay; log_relay.relay(log_relay.bind(int(sys.argv[1])), sys.stdout.buffer)"
LINES = 20_000
PROBE = b"probe"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_burst_larger_than_the_pipe_arrives_whole_and_in_order_while_stdout_is_not_read():
    port = free_udp_port()
    relay = subprocess.Popen([sys.executable, "-c", RELAY, str(port)], stdout=subprocess.PIPE)
    timer = threading.Timer(60, relay.kill)  # a line lost would leave readline waiting: end it, the assert says why
    timer.start()
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while not select.select([relay.stdout], [], [], 0.05)[0]:  # probes until the relay has bound its port
            sender.sendto(PROBE, ("127.0.0.1", port))
        # 3.2 MB: 50 pipes' worth, and more than even a forced receive buffer holds of datagrams this small
        sent = [f"egress call={index} {'x' * 150}".encode() for index in range(LINES)]
        for line in sent:
            sender.sendto(line, ("127.0.0.1", port))
        time.sleep(2)  # nobody reads stdout meanwhile: the relay's writes wait, its socket is still drained
        received = []
        while len(received) < LINES and (line := relay.stdout.readline()):
            if line != PROBE + b"\n":
                received.append(line.rstrip(b"\n"))
    finally:
        timer.cancel()
        relay.kill()
    assert received == sent
