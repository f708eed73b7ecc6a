"""Reading what tcpdump captured: TCP streams reassembled per direction, and whether a stream is TLS records.

Just enough of pcap, Ethernet, IPv4 and TCP for captures of a Docker bridge.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ETHERTYPE_IPV4 = 0x0800
TCP = 6
TLS_CONTENT_TYPES = {20, 21, 22, 23}  # change_cipher_spec, alert, handshake, application_data
TLS_RECORD_VERSIONS = {b"\x03\x01", b"\x03\x03"}  # a ClientHello's record may say TLS 1.0; TLS 1.3 says 1.2 after
TLS_MAX_RECORD = (1 << 14) + 256


@dataclass(frozen=True)
class Flow:
    source: str
    source_port: int
    destination: str
    destination_port: int


def tcp_streams(path: Path) -> dict[Flow, bytes]:
    """Each direction's payload in sequence order, a segment seen twice kept once."""
    segments: dict[Flow, dict[int, bytes]] = defaultdict(dict)
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    link_type = struct.unpack(endian + "I", data[20:24])[0]
    if link_type != 1:
        raise ValueError(f"{path}: link type {link_type}, expected Ethernet (1)")
    offset = 24
    while offset + 16 <= len(data):
        captured = struct.unpack(endian + "I", data[offset + 8 : offset + 12])[0]
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        if len(frame) < 34 or struct.unpack("!H", frame[12:14])[0] != ETHERTYPE_IPV4:
            continue
        ip = frame[14:]
        header_length, total_length, protocol = (ip[0] & 0x0F) * 4, struct.unpack("!H", ip[2:4])[0], ip[9]
        if protocol != TCP:
            continue
        tcp = ip[header_length:total_length]
        source_port, destination_port, sequence = struct.unpack("!HHI", tcp[:8])
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if payload:
            flow = Flow(_address(ip[12:16]), source_port, _address(ip[16:20]), destination_port)
            segments[flow].setdefault(sequence, payload)
    return {flow: b"".join(parts[sequence] for sequence in sorted(parts)) for flow, parts in segments.items()}


def _address(raw: bytes) -> str:
    return ".".join(str(octet) for octet in raw)


def tls_record_bytes(stream: bytes) -> int:
    """How many bytes of `stream` lie in an unbroken chain of TLS records running to its end.

    A capture can start in the middle of a record, so the chain may begin anywhere in the first 20 KB.
    """
    for start in range(min(len(stream), 20_000)):
        position = start
        while position + 5 <= len(stream):
            content_type, version = stream[position], stream[position + 1 : position + 3]
            length = int.from_bytes(stream[position + 3 : position + 5], "big")
            if content_type not in TLS_CONTENT_TYPES or version not in TLS_RECORD_VERSIONS or length > TLS_MAX_RECORD:
                break
            position += 5 + length
        if len(stream) - position < 5 and position - start > 5:  # the last record may be cut off by the capture's end
            return len(stream) - start
    return 0
