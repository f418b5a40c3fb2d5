"""`rtkp bench` end to end on a tiny model and a lavfi source (figures themselves are not asserted)."""

import json

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
