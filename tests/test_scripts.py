"""The runnable scripts still run (smoke tests with tiny settings; timings are not asserted)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=300):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_bench_train_quick_runs_and_checks_gradients():
    out = run("scripts/bench_train.py", "--quick", "--no-peers", "--batches", "64", "--dtypes", "float64")
    assert "autograd vs npflows gradient, float64" in out and "OK (< 1e-8)" in out
    rows = [line.split() for line in out.splitlines()]
    assert ["npflows", "float64", "64"] in [r[:3] for r in rows]
    assert ["GEMMs", "only,", "numpy", "float64", "64"] in [r[:5] for r in rows]
    assert "(a --quick smoke run: the targets are not meant to be met)" in out      # and the exit status was 0


def test_bench_train_quick_times_the_products_of_the_step_and_the_thread_policy_row():
    out = run("scripts/bench_train.py", "--quick", "--no-peers", "--batches", "64", "--dtypes", "float32",
              "--threads", "2")
    rows = [line.split() for line in out.splitlines()]
    assert ["npflows,", "1", "BLAS", "thread", "float32", "64"] in [r[:6] for r in rows]
    assert ["all", "npflows'", "products", "float32", "64"] in [r[:5] for r in rows]


def test_bench_threads_quick_runs_the_use_block_quiet_and_loaded():
    """Smoke run: 3 settings x {quiet, every core busy} in fresh processes, and the products table."""
    out = run("scripts/bench_threads.py", "--quick", "--steps", "3", timeout=300)
    for setting in ("npflows default", "pinned (OPENBLAS_NUM_THREADS=1)", "BLAS default (NPFLOWS_BLAS_THREADS=default)"):
        assert out.count(setting) >= 3, setting        # quiet line, loaded line, table row
    assert "target: with every core busy" in out and "(a --quick smoke run: not meant to meet it)" in out


def test_distill_quick_runs(tmp_path):
    """scripts/distill.py end to end with tiny settings (the measured figures are in its docstring)."""
    out = run("scripts/distill.py", "--quick", "--out", str(tmp_path), timeout=60)
    assert "distill summary: teacher test LL" in out and "KL(student || teacher)" in out
    assert "(a --quick smoke run: not meant to meet it)" in out and "MISSES" not in out
    assert out.startswith("--quick: a smoke run")
    assert (tmp_path / "student.npz").exists()


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_demo_cnf_quick_runs(tmp_path, trace):
    """scripts/demo_cnf.py end to end with tiny settings (20 steps, MLP 16-16), trained with either trace; its
    measured figures are in its docstring."""
    out = run("scripts/demo_cnf.py", "--quick", "--no-plots", "--data", "two_moons", "--out", str(tmp_path),
              "--trace", trace, timeout=120)
    assert "two_moons CNF: test LL" in out and "NFE forward" in out
    assert ("Hutchinson trace (rademacher probe, fresh per step)" in out) == (trace == "hutchinson")
    assert (tmp_path / ("two_moons_cnf.npz" if trace == "exact" else "two_moons_cnf_hutchinson.npz")).exists()


def test_bench_cnf_quick_runs():
    out = run("scripts/bench_cnf.py", "--quick", "--methods", "RK45", "--batch", "64", timeout=120)
    assert "adjoint NFE" in out and "RK45" in out and out.startswith("--quick: a smoke run")


def test_bench_checks_quick_runs_and_the_checks_change_no_number():
    out = run("scripts/bench_checks.py", "--quick", "--dims", "2", "--batches", "64", "--dtypes", "float64",
              timeout=120)
    assert "ratio = checked / unchecked" in out and out.rstrip().endswith("yes")


def test_bench_autoregressive_quick_runs_without_the_peer():
    """Both sections with a tiny batch; without zuko (--no-peers, as when torch is not installed) the D = 64
    section times npflows alone, says the peer is absent and judges no target.  The script itself asserts
    that the by-degree samples equal the D-pass reference's and map back to their draws."""
    out = run("scripts/bench_autoregressive.py", "--quick", "--no-peers", "--batch", "64", timeout=120)
    assert "MAF = NormalizingFlow(b)" in out and "IAF = PushForward(b)" in out
    assert "zuko: ABSENT, skipped by --no-peers" in out
    assert out.count("not judged, zuko absent") == 2 and "MISSES" not in out
    assert out.startswith("--quick: a smoke run")


def test_bench_autoregressive_quick_times_spline_maf_sampling_both_ways():
    """Section 3 alone with a tiny batch: a row per D (8 and 64) with both samplers timed; the script itself
    asserts that the by-degree samples equal the D-pass reference's and map back to their draws, and prints
    what it measured."""
    out = run("scripts/bench_autoregressive.py", "--quick", "--sections", "3", "--batch", "32", timeout=120)
    assert out.startswith("--quick: a smoke run") and "3. Spline-MAF sampling: 32 draws" in out
    assert "D = 8: by-degree vs D-pass sample max|diff|" in out and "D = 64: by-degree vs D-pass" in out
    rows = {r[0]: r for r in (line.split() for line in out.splitlines()) if len(r) == 7 and r[0] in ("8", "64")}
    assert sorted(rows) == ["64", "8"] and all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows.values())
    assert "1. MAF vs IAF" not in out and "2. MAF sampling" not in out


RUNNABLE = sorted(p.name for p in (ROOT / "scripts").glob("*.py") if '__name__ == "__main__"' in p.read_text())
"""The scripts (not the modules they share, such as the digits' image models or the benchmark's torch Glow)."""


@pytest.mark.parametrize("script", RUNNABLE)
def test_help_documents_every_option_once(script):
    """Every option has help text, and no default is printed twice (``(default: ...) (default: None)``)."""
    out = run(f"scripts/{script}", "--help", timeout=60)
    assert out.strip(), f"{script} --help printed nothing"
    blocks = re.split(r"\n(?=  -)", out.split("options:", 1)[1]) if "options:" in out else []
    for block in (b for b in blocks if b.strip()):
        first, *rest = block.strip("\n").split("\n")
        has_help = len(re.split(r"\s{2,}", first.strip())) > 1 or any(line.strip() for line in rest)
        assert has_help, f"{script}: option without help text: {block.strip()}"
        assert block.count("(default:") <= 1, f"{script}: default printed twice: {block.strip()}"


def test_a_missed_target_fails_a_full_run_and_not_a_smoke_run(capsys):
    """One rule for every script's stated targets (scripts/_cli.py): exit status 1 only for a full run."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from _cli import exit_status, target_verdict
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert exit_status(True, quick=False) == 1 and "exit status 1" in capsys.readouterr().out
    assert exit_status(True, quick=True) == 0 and exit_status(False, quick=False) == 0
    assert target_verdict(False, quick=False) == "MISSES it" and target_verdict(True, quick=False) == "meets it"
    assert "smoke run" in target_verdict(False, quick=True)


def test_digits_baselines_quick_runs():
    """scripts/digits_baselines.py --quick (2 draws, 3 fits): the table and both target lines as a smoke run
    (tests/test_digits.py checks the full run's figures)."""
    pytest.importorskip("sklearn", reason="scikit-learn is not installed: the digits ship with it "
                                          "(pip install \"npflows[digits]\", or .[test])")
    out = run("scripts/digits_baselines.py", "--quick", timeout=120)
    assert out.startswith("--quick: a smoke run") and "1257 train / 180 validation / 360 test" in out
    for row in ("categorical, add-1 smoothing", "Gaussian, one dequantized copy, 2 draws",
                "exact expectation, mean over 3 fits", "Gaussian, exact ML fit, 2 draws"):
        assert row in out, row
    assert out.count("(a --quick smoke run: not meant to meet it)") == 2 and "MISSES" not in out
