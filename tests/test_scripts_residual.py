"""The residual block's benchmark script still runs (a smoke test with tiny settings; timings are not asserted)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_residual_logdet_quick_runs():
    out = subprocess.run([sys.executable, "scripts/bench_residual_logdet.py", "--quick", "--dims", "2",
                          "--hidden", "8", "8"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert text.startswith("--quick: a smoke run")
    for row in ("exact", "series 2", "series 20", "roulette", "grad=neumann"):
        assert row in text, row
    assert "D = 2, random block" in text and "D = 2, aligned block" in text
