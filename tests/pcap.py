"""Reading what tcpdump captured: TCP streams reassembled per direction, and whether a stream is TLS records.

Just enough of pcap, Ethernet, IPv4, TCP and VXLAN for captures of a Docker bridge or of a swarm node's link.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ETHERTYPE_IPV4 = 0x0800
TCP = 6
UDP = 17
VXLAN_PORT = 4789  # what Docker's overlay driver sends between nodes
UDP_HEADER = VXLAN_HEADER = 8
TLS_CONTENT_TYPES = {20, 21, 22, 23}  # change_cipher_spec, alert, handshake, application_data
TLS_RECORD_VERSIONS = {b"\x03\x01", b"\x03\x03"}  # a ClientHello's record may say TLS 1.0; TLS 1.3 says 1.2 after
TLS_MAX_RECORD = (1 << 14) + 256
SEQUENCE_SPACE = 1 << 32
CAPTURE_BUFFER_KIB = 65_536  # the kernel's capture buffer: the rounds' bursts must not overrun tcpdump


@dataclass(frozen=True)
class Flow:
    source: str
    source_port: int
    destination: str
    destination_port: int


@contextlib.contextmanager
def tcpdump(interface: str, path: Path, expression: str = "tcp", network_of: int | None = None):
    """tcpdump on `interface` into `path` while the block runs; `network_of`: a pid, whose network namespace holds
    the interface (a swarm node's own link)."""
    command = ["tcpdump", "-i", interface, "-w", str(path), "-B", str(CAPTURE_BUFFER_KIB), "-s", "0", "-n", expression]
    if network_of is not None:
        command = ["nsenter", "-t", str(network_of), "-n", *command]
    process = subprocess.Popen(command if os.geteuid() == 0 else ["sudo", "-n", *command], stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert "listening on" in line, f"tcpdump on {interface} did not start: {line}{process.stderr.read()[:500]}"
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def tcp_streams(path: Path) -> dict[Flow, list[bytes]]:
    """Each direction's payload as its contiguous pieces in sequence order.

    Bytes sent twice (a retransmission, with the same or other segment boundaries) are kept once; a piece ends
    where the capture missed bytes, so a check of record framing can start again after the gap.
    """
    segments: dict[Flow, list[tuple[int, bytes]]] = defaultdict(list)
    for flow, sequence, payload in _tcp_segments(path.read_bytes(), path):
        segments[flow].append((sequence, payload))
    return {flow: _contiguous(parts) for flow, parts in segments.items()}


def payload(streams: dict[Flow, list[bytes]]) -> bytes:
    """Every piece of every stream, NUL-separated so that a search never matches across two of them."""
    return b"\0".join(piece for pieces in streams.values() for piece in pieces)


def _tcp_segments(data: bytes, path: Path):
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    link_type = struct.unpack(endian + "I", data[20:24])[0]
    if link_type != 1:
        raise ValueError(f"{path}: link type {link_type}, expected Ethernet (1)")
    offset = 24
    while offset + 16 <= len(data):
        captured = struct.unpack(endian + "I", data[offset + 8 : offset + 12])[0]
        yield from _frame_segments(data[offset + 16 : offset + 16 + captured])
        offset += 16 + captured


def _frame_segments(frame: bytes):
    """The TCP segment an Ethernet frame carries, also when the frame is a VXLAN datagram between two swarm nodes
    (the overlay's frame inside it)."""
    if len(frame) < 34 or struct.unpack("!H", frame[12:14])[0] != ETHERTYPE_IPV4:
        return
    ip = frame[14:]
    header_length, total_length, protocol = (ip[0] & 0x0F) * 4, struct.unpack("!H", ip[2:4])[0], ip[9]
    if protocol == UDP and struct.unpack("!H", ip[header_length + 2 : header_length + 4])[0] == VXLAN_PORT:
        yield from _frame_segments(ip[header_length + UDP_HEADER + VXLAN_HEADER : total_length])
    if protocol != TCP:
        return
    tcp = ip[header_length:total_length]
    source_port, destination_port, sequence = struct.unpack("!HHI", tcp[:8])
    segment = tcp[(tcp[12] >> 4) * 4 :]
    if segment:
        yield Flow(_address(ip[12:16]), source_port, _address(ip[16:20]), destination_port), sequence, segment


def _contiguous(parts: list[tuple[int, bytes]]) -> list[bytes]:
    """Sequence numbers are taken relative to the first segment seen, modulo 2**32, so a stream may wrap."""
    first = parts[0][0]
    relative = sorted(((sequence - first) % SEQUENCE_SPACE, segment) for sequence, segment in parts)
    pieces: list[bytearray] = []
    end = None
    for start, segment in relative:
        if end is None or start > end:
            pieces.append(bytearray(segment))
            end = start + len(segment)
        elif start + len(segment) > end:
            pieces[-1] += segment[end - start :]
            end = start + len(segment)
    return [bytes(piece) for piece in pieces]


def _address(raw: bytes) -> str:
    return ".".join(str(octet) for octet in raw)


def tls_record_bytes(pieces: list[bytes]) -> int:
    """How many bytes of a stream's pieces lie in TLS records, each piece an unbroken chain of records to its end.

    A capture can start in the middle of a record, and so can a piece after a gap, so a chain may begin anywhere in
    a piece's first 20 KB.
    """
    return sum(map(_chained_record_bytes, pieces))


def _chained_record_bytes(piece: bytes) -> int:
    for start in range(min(len(piece), 20_000)):
        position = start
        while position + 5 <= len(piece):
            content_type, version = piece[position], piece[position + 1 : position + 3]
            length = int.from_bytes(piece[position + 3 : position + 5], "big")
            if content_type not in TLS_CONTENT_TYPES or version not in TLS_RECORD_VERSIONS or length > TLS_MAX_RECORD:
                break
            position += 5 + length
        if len(piece) - position < 5 and position - start > 5:  # the last record may be cut off by the piece's end
            return len(piece) - start
    return 0
