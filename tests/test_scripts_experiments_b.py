"""Smoke runs of issue 16's experiments 3 and 4 (tiny settings; the measured figures are in the scripts'
docstrings): memory in depth with recomputation, and the Schrödinger bridge."""
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

# matplotlib is an optional extra: without it (CI installs only .[test]) the scripts skip their plots
HAVE_MATPLOTLIB = find_spec("matplotlib") is not None

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=180):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_exp_memory_depth_quick_runs(tmp_path):
    out = run("scripts/exp_memory_depth.py", "--quick", "--out", str(tmp_path))
    assert out.startswith("--quick: a smoke run")
    assert "memory fit per d" in out and "gradient difference recompute vs cached" in out and "conclusion:" in out
    rows = {r[0]: r for r in (line.split() for line in out.splitlines()) if len(r) == 8 and r[0] in ("2", "4")}
    assert sorted(rows) == ["2", "4"]
    for r in rows.values():                        # cached slope positive; the recomputing one far below it
        assert float(r[1]) > 100 and abs(float(r[3])) < 0.1 * float(r[1])
    assert (tmp_path / "memory_depth.png").exists() or not HAVE_MATPLOTLIB


def test_exp_schrodinger_bridge_quick_runs(tmp_path):
    out = run("scripts/exp_schrodinger_bridge.py", "--quick", "--out", str(tmp_path))
    assert out.startswith("--quick: a smoke run")
    assert "Sinkhorn per eps" in out and "exact OT (linear_sum_assignment)" in out and "CNF" in out
    table = [line.split() for line in out.split("Sinkhorn per eps", 1)[1].splitlines()]
    rows = [r for r in table if r and r[0] in ("1", "0.1")]
    assert [r[0] for r in rows] == ["1", "0.1"]
    for r in rows:
        assert float(r[3]) <= 1e-6 and float(r[4]) <= 1e-6 and r[12] == "yes"    # marginals; exact endpoints
    assert (tmp_path / "schrodinger_bridge.png").exists() or not HAVE_MATPLOTLIB
