"""bench/decoder_gpu.py --tiny: the GPU bench's settings run end to end on the CPU with a small config
(the ~1B run itself needs a GPU), each printing its JSON line."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_decoder_bench_runs_every_setting_with_tiny(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "decoder_gpu.py"), "--tiny", "--steps", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    model, settings = lines[0], lines[1:]
    assert model["model"] == "llama" and model["parameters"] > 0
    assert [s["setting"] for s in settings] == [
        "bf16/fixed128", "bf16+checkpointing/fixed128", "4bit/fixed128",
        "bf16/chat8-128+packing", "bf16+checkpointing/chat8-128+packing", "4bit/chat8-128+packing"]
    for s in settings:
        assert "error" not in s, s
        if "skipped" in s:  # only the 4-bit ones, where this build or host has no 4-bit path
            assert s["quantization"] == "4bit" and s["skipped"], s
            continue
        assert s["steps"] == 1 and s["tokens_per_s"] > 0 and s["peak_memory_bytes"] > 0, s
        assert s["estimate_bytes"] == sum(s["estimate_parts"].values()) > 0, s
    by_name = {s["setting"]: s for s in settings}
    assert by_name["bf16+checkpointing/fixed128"]["gradient_checkpointing"] is True
    assert by_name["bf16/chat8-128+packing"]["packing"] is True
    assert (by_name["bf16+checkpointing/fixed128"]["estimate_parts"]["activations"]
            < by_name["bf16/fixed128"]["estimate_parts"]["activations"])
