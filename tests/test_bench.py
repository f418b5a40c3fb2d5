"""`rtkp bench` end to end on a tiny model and a lavfi source.

How fast this machine is never decides a test: the figures are checked for being measured and consistent with each
other (ratios are the ratios of the reported rates, percentiles ordered, every frame accounted for), not for speed."""

import json

import pytest

from rtkp.cli import main


def test_bench_writes_every_required_field(tiny_model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            "--source",
            "lavfi:testsrc2=size=128x96:rate=30",
            "--model",
            str(tiny_model),
            "--backend",
            "onnxruntime",
            "--seconds",
            "0.5",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["decode_fps"] > 0
    assert r["model_only"]["fps"] > 0 and {"p50", "p99"} <= set(r["model_only"]["latency_ms"])
    assert r["lossless"]["fps"] > 0 and r["naive"]["fps"] > 0
    assert {"p50", "p95", "p99"} <= set(r["live"]["latency_ms"]) and "dropped" in r["live"]
    assert {"cpu", "cores", "gpu", "torch", "onnxruntime", "av"} <= set(r["machine"])
    assert "pipeline lossless" in capsys.readouterr().out

    mo, ll, nv, lv = r["model_only"], r["lossless"], r["naive"], r["live"]
    ratios = r["ratios"]
    assert ratios["lossless_over_model_only"] == pytest.approx(ll["fps"] / mo["fps"], rel=0.01)
    assert ratios["lossless_over_model_only_same_batch"] == pytest.approx(ll["fps"] / mo["fps_batch"], rel=0.01)
    assert ratios["lossless_over_naive"] == pytest.approx(ll["fps"] / nv["fps"], rel=0.01)
    assert ratios["live_p50_minus_model_p50_ms"] == pytest.approx(
        lv["latency_ms"]["p50"] - mo["latency_ms"]["p50"], abs=0.01
    )
    assert ratios["live_p99_over_p50"] == pytest.approx(lv["latency_ms"]["p99"] / lv["latency_ms"]["p50"], rel=0.01)
    for figures in (mo["latency_ms"], lv["latency_ms"]):
        values = [figures[k] for k in ("p50", "p95", "p99") if k in figures]
        assert all(v > 0 for v in values) and values == sorted(values)
    # lossless tracks every decoded frame (at least 30); live accounts for each one
    assert ll["counts"]["decoded"] == ll["frames"] >= 30 and ll["dropped"] == 0
    c = lv["counts"]
    assert c["decoded"] == c["tracked"] + c["dropped_ring_full"] + c["dropped_superseded"] + c["in_flight_at_end"]
    assert lv["frames"] == c["tracked"] > 0 and lv["dropped"] == c["dropped_superseded"]
    assert nv["frames"] > 0 and nv["fps"] > 0
