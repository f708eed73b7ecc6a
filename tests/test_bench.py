"""A tiny benchmark sweep on its own real cluster: every output, and numbers that hold together."""

import json

from fl.bench import report, sweep

TINY = sweep.SweepSettings(owners=(3,), sizes=(1_000, 20_000), aggregations=("additive", "plaintext"), rounds=2)


def test_tiny_sweep_writes_json_table_and_plots(tmp_path):
    rows = sweep.run(TINY, verbose=0)
    outputs = report.write(rows, {"mode": "test"}, tmp_path)
    results = json.loads(outputs["json"].read_text())["results"]
    assert {(r["aggregation"], r["size"]) for r in results} == {(a, s) for a in TINY.aggregations for s in TINY.sizes}
    for row in results:
        assert 0 < row["median_seconds"] <= row["p95_seconds"]
        assert row["protocol_bytes_per_owner"] >= row["minimum_bytes_per_owner"] > 0
        assert row["wire_bytes_per_owner"] is None  # the local backend shares the host's interfaces
    assert all(r["latency_vs_plaintext"] == 1.0 for r in results if r["aggregation"] == "plaintext")
    additive = next(r for r in results if r["aggregation"] == "additive" and r["size"] == 20_000)
    assert additive["protocol_bytes_per_owner"] == 8 * 20_000 + 2 * 32  # one ring vector and two seeds
    table = outputs["markdown"].read_text()
    assert table.count("| additive |") == 2 and table.count("| plaintext |") == 2
    for name in ("latency_vs_size", "bytes_vs_owners"):
        assert outputs[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
