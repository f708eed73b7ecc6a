"""One identity's sidecar as an HAProxy configuration.

A player's TF server (or the driver) sits alone on a private network with its sidecar,
on which the sidecar answers to every peer's name. So:

- **ingress** (players' network, mutual TLS 1.3): a peer's sidecar or the driver's calls in;
  a client without a certificate from the cluster CA fails the handshake; the caller's
  certificate name and the gRPC method decide, by `fl.mesh.policy`, whether the call
  reaches the TF server; every call is logged with the caller, the decision and the call id
  the caller's egress gave it.
- **egress** (the private link only, from the principal's address only): the TF server
  dials `peer:port` from the cluster file, which lands here; the `:authority` picks the
  peer, and the call leaves with this identity's certificate, verifying the peer's name,
  and with a call id (`CALL_ID_HEADER`) that both sides log, so each call can be matched.
- **metrics** (mutual TLS as well): GET /metrics from Prometheus or the driver is relayed
  to the principal's exporter; the driver's own GET /metrics to a player leaves through its
  sidecar the same way (the benchmark reads the owners' wire bytes so).

HAProxy rather than nginx: `verify required` refuses a bad client certificate in the
handshake itself (nginx completes it and answers HTTP 400), and it multiplexes many
gRPC streams over one HTTP/2 connection to a peer (nginx's grpc_pass opens one upstream
connection per concurrent stream).
"""

from __future__ import annotations

from dataclasses import dataclass

from fl.cluster import DRIVER, Cluster
from fl.mesh import policy

# HTTP/2 flow-control window HAProxy grants each stream; its default 64 KB caps a stream at 64 KB per round trip
H2_WINDOW_BYTES = 4 << 20
# Buffers and HTTP/2 frames of 128 KB instead of 16 KB: fewer passes per MB through each proxy. Measured on the
# Compose testbed (3 owners, plaintext aggregation of 10^6 parameters, 20 rounds): median 0.224 s -> 0.145 s, the
# sidecars' CPU 5.0 -> 3.1 s; 64 KB and 1 MB did worse.
BUFFER_BYTES = 128 << 10
# gRPC streams (StreamingEnqueue) stay open for the life of a TF context
IDLE_TIMEOUT = "1h"
# after a reload (new certificates), the old processes' connections are closed this soon; clients reconnect
OLD_CONNECTIONS_AFTER_RELOAD = "15s"
# gRPC metadata the egress adds to every call and the ingress logs; the TF server ignores it
CALL_ID_HEADER = "fl-call-id"
LOG_PORT = 5140  # HAProxy sends its log to this loopback UDP port; fl/mesh/log_relay.py passes it to stdout


@dataclass(frozen=True)
class SidecarAddresses:
    """What the sidecar learns at start: its address on the private link and its principal's."""

    private: str
    principal: str


def render(cluster: Cluster, identity: str, addresses: SidecarAddresses, identity_pem: str, ca_pem: str) -> str:
    """The haproxy.cfg of `identity`'s sidecar (a player's name or the driver), with its certificate and key and the CA."""
    mesh = cluster.mesh
    if mesh is None:
        raise ValueError("the cluster file has no 'mesh' section: its links are plaintext, there is no sidecar to run")
    peers = [player for player in cluster.players if player.name != identity]
    sections = [_global(), _defaults()]
    if identity != DRIVER:
        principal = cluster.player(identity)
        callers = [player.name for player in peers]
        sections.append(_ingress(identity, principal.port, mesh.ingress_port, identity_pem, ca_pem, callers))
    exporter = cluster.metrics.driver if identity == DRIVER else cluster.metrics.players[identity]
    sections.append(_metrics_ingress(identity, mesh.metrics_port, _port(exporter), identity_pem, ca_pem))
    credentials = f"ssl crt {identity_pem} ca-file {ca_pem}"
    grpc_ports = sorted({player.port for player in peers})
    sidecars = {peer.name: mesh.sidecar_address(peer.name) for peer in peers}
    sections += _to_peers("grpc", identity, addresses, grpc_ports, sidecars, credentials)
    if identity in policy.METRICS_READERS:
        metrics_ports = sorted({_port(cluster.metrics.players[peer.name]) for peer in peers})
        metrics_sidecars = {peer.name: f"{mesh.sidecars[peer.name]}:{mesh.metrics_port}" for peer in peers}
        sections += _to_peers("metrics", identity, addresses, metrics_ports, metrics_sidecars, credentials)
    return "\n".join(sections)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _to_peers(
    kind: str, identity: str, addresses: SidecarAddresses, ports: list[int], sidecars: dict[str, str], credentials: str
) -> list[str]:
    """The egress frontend for `kind` (grpc or metrics) and one backend per peer: this identity's certificate
    out, the peer's name verified on its certificate. A peer's address comes from the resolvers only, never from
    libc at start: a peer not up yet would cost a DNS timeout each (a swarm resolves a sidecar once it is healthy,
    so every sidecar would wait out the others')."""
    alpn = " alpn h2" if kind == "grpc" else ""
    sections = [_egress(identity, addresses, ports, list(sidecars), kind)]
    for peer, sidecar in sidecars.items():
        sections.append(
            f"backend {kind}_{peer}\n"
            f"    server {peer} {sidecar} {credentials} verify required verifyhost {peer} sni str({peer}){alpn}"
            " init-addr none\n"
        )
    return sections


def _global() -> str:
    return (
        "global\n"
        f"    log 127.0.0.1:{LOG_PORT} format raw local0\n"
        "    user haproxy\n"
        "    group haproxy\n"
        f"    hard-stop-after {OLD_CONNECTIONS_AFTER_RELOAD}\n"
        "    ssl-default-bind-options ssl-min-ver TLSv1.3\n"
        "    ssl-default-server-options ssl-min-ver TLSv1.3\n"
        f"    tune.h2.initial-window-size {H2_WINDOW_BYTES}\n"
        f"    tune.bufsize {BUFFER_BYTES}\n"
        f"    tune.h2.max-frame-size {BUFFER_BYTES}\n"
        "\n"
        # Docker's DNS: a peer's sidecar may start after this one, or come back at a new address
        "resolvers docker\n"
        "    nameserver dns 127.0.0.11:53\n"
        "    hold valid 5s\n"
    )


def _defaults() -> str:
    return (
        "defaults\n"
        "    mode http\n"
        "    log global\n"
        "    option dontlognull\n"
        "    option http-no-delay\n"  # gRPC is request/response: send each frame now, do not wait to fill a packet
        "    timeout connect 5s\n"
        f"    timeout client {IDLE_TIMEOUT}\n"
        f"    timeout server {IDLE_TIMEOUT}\n"
        "    default-server init-addr last,libc,none resolvers docker\n"
    )


def _ingress(identity: str, tf_port: int, port: int, identity_pem: str, ca_pem: str, peers: list[str]) -> str:
    """Mutual TLS in; deny by default; allowed calls reach the TF server over the private link."""
    driver_methods = " ".join(policy.DRIVER_METHODS)
    peer_methods = " ".join(policy.PEER_METHODS)
    return (
        "frontend ingress\n"
        f"    bind :{port} ssl crt {identity_pem} ca-file {ca_pem} verify required alpn h2\n"
        f'    log-format "ingress player={identity} caller=%[ssl_c_s_dn(CN)] method=%[var(txn.method)] '
        f'decision=%[var(txn.decision)] status=%ST bytes_out=%B call=%[var(txn.call)]"\n'
        f"    http-request set-var(txn.call) req.hdr({CALL_ID_HEADER})\n"
        "    http-request set-var(txn.method) path\n"
        f"    acl caller_driver ssl_c_s_dn(CN) -m str {DRIVER}\n"
        f"    acl caller_peer ssl_c_s_dn(CN) -m str {' '.join(peers)}\n"
        f"    acl driver_method path -m str {driver_methods}\n"
        f"    acl peer_method path -m str {peer_methods}\n"
        "    http-request set-var(txn.decision) str(allowed) if caller_driver driver_method\n"
        "    http-request set-var(txn.decision) str(allowed) if caller_peer peer_method\n"
        "    http-request set-var(txn.decision) str(DENIED) unless { var(txn.decision) -m str allowed }\n"
        "    http-request deny deny_status 403 if { var(txn.decision) -m str DENIED }\n"
        "    default_backend tf_server\n"
        "\n"
        "backend tf_server\n"
        f"    server {identity} {identity}:{tf_port} proto h2\n"
    )


def _metrics_ingress(identity: str, port: int, exporter_port: int, identity_pem: str, ca_pem: str) -> str:
    """Mutual TLS; GET /metrics for the metrics readers only; only refusals are logged (scrapes come every 2 s)."""
    return (
        "frontend metrics_ingress\n"
        f"    bind :{port} ssl crt {identity_pem} ca-file {ca_pem} verify required\n"
        f'    log-format "metrics player={identity} caller=%[ssl_c_s_dn(CN)] method=%[var(txn.method)] status=%ST"\n'
        "    http-request set-var(txn.method) path\n"
        f"    acl reader ssl_c_s_dn(CN) -m str {' '.join(policy.METRICS_READERS)}\n"
        "    http-request set-log-level silent if reader METH_GET { path /metrics }\n"
        "    http-request deny deny_status 403 unless reader METH_GET { path /metrics }\n"
        "    default_backend own_metrics\n"
        "\n"
        "backend own_metrics\n"
        f"    server {identity} {identity}:{exporter_port}\n"
    )


def _egress(identity: str, addresses: SidecarAddresses, ports: list[int], peers: list[str], kind: str) -> str:
    """Out from the principal only, bound to the private link so no one on the players' network can borrow this identity."""
    binds = "".join(f"    bind {addresses.private}:{port}{' proto h2' if kind == 'grpc' else ''}\n" for port in ports)
    routes = "".join(f"    use_backend {kind}_{peer} if {{ var(txn.callee) -m str {peer} }}\n" for peer in peers)
    logging = (
        f'    log-format "egress player={identity} callee=%[var(txn.callee)] method=%[var(txn.method)] status=%ST '
        'ended=%ts call=%[unique-id]"\n'
        # unique within a sidecar (its pid, the request's second, its request counter), across sidecars by the identity
        f"    unique-id-format {identity}-%pid-%Ts-%rt\n"
        f"    http-request set-header {CALL_ID_HEADER} %[unique-id]\n"
        if kind == "grpc"
        else "    no log\n"
    )
    return (
        f"frontend {kind}_egress\n"
        f"{binds}"
        f"    tcp-request connection reject unless {{ src {addresses.principal} }}\n"
        f"{logging}"
        "    http-request set-var(txn.callee) req.hdr(host),field(1,:)\n"
        "    http-request set-var(txn.method) path\n"
        f"    http-request deny deny_status 421 unless {{ var(txn.callee) -m str {' '.join(peers)} }}\n"
        f"{routes}"
    )
