"""Reassembly of captured TCP streams and the TLS record check, on pcap files written here."""

import struct
from pathlib import Path

from pcap import Flow, payload, tcp_streams, tls_record_bytes

CLIENT, SERVER = (b"\x0a\x00\x00\x01", 40000), (b"\x0a\x00\x00\x02", 7443)
FLOW = Flow("10.0.0.1", 40000, "10.0.0.2", 7443)


def frame(sequence: int, data: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", CLIENT[1], SERVER[1], sequence, 0, 5 << 4, 0x18, 65535, 0, 0) + data
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, CLIENT[0], SERVER[0]) + tcp
    return b"\x00" * 12 + b"\x08\x00" + ip


def write_pcap(path: Path, segments: list[tuple[int, bytes]]) -> Path:
    records = b"".join(struct.pack("<IIII", 0, 0, len(f), len(f)) + f for f in (frame(s, d) for s, d in segments))
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + records)
    return path


def record(body: bytes) -> bytes:
    return b"\x17\x03\x03" + len(body).to_bytes(2, "big") + body


def test_a_retransmission_with_other_boundaries_is_kept_once(tmp_path):
    pcap = write_pcap(tmp_path / "p.pcap", [(100, b"abcdef"), (103, b"defghi"), (100, b"abc"), (109, b"jk")])
    assert tcp_streams(pcap) == {FLOW: [b"abcdefghijk"]}


def test_a_stream_whose_sequence_numbers_wrap_stays_in_order(tmp_path):
    pcap = write_pcap(tmp_path / "p.pcap", [(2**32 - 3, b"abc"), (0, b"def"), (3, b"ghi")])
    assert tcp_streams(pcap) == {FLOW: [b"abcdefghi"]}


def test_bytes_the_capture_missed_split_the_stream_into_pieces(tmp_path):
    pcap = write_pcap(tmp_path / "p.pcap", [(10, b"abc"), (20, b"xyz"), (13, b"de")])
    streams = tcp_streams(pcap)
    assert streams == {FLOW: [b"abcde", b"xyz"]}
    assert payload(streams) == b"abcde\0xyz"


def test_records_are_counted_in_every_piece_and_a_piece_may_start_inside_a_record():
    first, second = record(b"A" * 50), record(b"B" * 40)
    assert tls_record_bytes([first + second]) == 100
    assert tls_record_bytes([first + second[:10], second[30:] + record(b"C" * 7)]) == 55 + 10 + 12


def test_plaintext_is_not_counted_as_records():
    assert tls_record_bytes([b"POST /tensorflow.WorkerService/RecvTensor HTTP/2\r\n" * 3]) == 0
    assert tls_record_bytes([record(b"A" * 50) + b"GET / HTTP/1.1\r\n" * 20]) == 0
