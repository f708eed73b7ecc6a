"""Which of the given targets answer (kind:host:port; `get` asks plain HTTP for /metrics): one JSON line."""

import json
import socket
import sys

found = {}
for target in sys.argv[1:]:
    kind, host, port = target.split(":")
    try:
        with socket.create_connection((host, int(port)), 2) as connection:
            if kind == "get":  # plain HTTP, as a scraper without a certificate would ask
                connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                connection.settimeout(3)
                reply = connection.recv(65536)
                found[target] = "metrics" if b"# TYPE" in reply else f"no metrics ({len(reply)} bytes)"
            else:
                found[target] = "open"
    except OSError as error:
        found[target] = type(error).__name__
print(json.dumps(found))
