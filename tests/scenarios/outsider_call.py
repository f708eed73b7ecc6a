"""Run in a container on the players' network that is not part of the cluster: try a sidecar's TLS port.

Usage: outsider_call.py HOST PORT SERVER_NAME CA_FILE [CERT_FILE KEY_FILE]

Prints JSON: what a raw TLS 1.3 handshake (then a read, where TLS 1.3 delivers the
server's verdict on the client certificate) ended with, and the status of a gRPC call to
a driver-only method made with the same credentials, as TF's own client would make it.
"""

import json
import socket
import ssl
import sys

import grpc

host, port, server_name, ca_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
cert_file, key_file = (sys.argv[5], sys.argv[6]) if len(sys.argv) > 6 else (None, None)


def handshake() -> str:
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    try:
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            received = tls.recv(64)
            return f"accepted: {len(received)} bytes of HTTP/2 settings"
    except (ssl.SSLError, OSError) as error:
        return f"refused: {type(error).__name__}: {error}"


def grpc_call() -> str:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=open(ca_file, "rb").read(),
        private_key=open(key_file, "rb").read() if key_file else None,
        certificate_chain=open(cert_file, "rb").read() if cert_file else None,
    )
    options = [("grpc.ssl_target_name_override", server_name)]
    with grpc.secure_channel(f"{host}:{port}", credentials, options) as channel:
        call = channel.unary_unary("/tensorflow.WorkerService/GetStatus")
        try:
            call(b"", timeout=10)
            return "OK"
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"


print(json.dumps({"handshake": handshake(), "grpc": grpc_call()}))
