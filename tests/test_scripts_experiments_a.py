"""Issue 16's experiments 1 and 2 (scripts/exp_disconnected_support.py, scripts/exp_forgotten_dequantization.py):
``--quick`` smoke runs, and the exact quantities the first one compares its models with."""
import math
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

# matplotlib is an optional extra: without it (CI installs only .[test]) the scripts skip their plots
HAVE_MATPLOTLIB = find_spec("matplotlib") is not None

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=120):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def exp1():
    """The script as a module; its import sets default BLAS thread counts in os.environ, undone here so that
    the subprocesses of later tests inherit the environment they would have had."""
    saved = dict(os.environ)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import exp_disconnected_support as mod
    finally:
        sys.path.remove(str(ROOT / "scripts"))
        os.environ.clear()
        os.environ.update(saved)
    return mod


@pytest.mark.parametrize("s", [2.0, 4.0, 8.0, 16.0])
def test_exact_density_and_bridge_mass_agree_with_quadrature(exp1, s):
    """The mixture's log-density integrates to 1, and the bridge's true mass (normal CDF) equals the integral of
    that density over B, both by Gauss-Legendre quadrature (40 x 40 nodes on each panel, panels of width 1 so
    a unit-variance normal is resolved far below 1e-12); tolerances 1e-10 absolute: the quadrature's error is
    below 1e-13 and the mass of the truncated tails (beyond 10 std) below 1e-22."""
    nodes, weights = np.polynomial.legendre.leggauss(40)

    def integrate(x0, x1, y0, y1):
        total = 0.0
        for a in np.arange(x0, x1, 1.0):
            xs = a + 0.5 * (nodes + 1.0) * min(1.0, x1 - a)
            wx = 0.5 * weights * min(1.0, x1 - a)
            for b in np.arange(y0, y1, 1.0):
                ys = b + 0.5 * (nodes + 1.0) * min(1.0, y1 - b)
                wy = 0.5 * weights * min(1.0, y1 - b)
                xx, yy = np.meshgrid(xs, ys, indexing="ij")
                f = np.exp(exp1.log_density(np.stack([xx.ravel(), yy.ravel()], 1), s)).reshape(xx.shape)
                total += wx @ f @ wy
        return total

    assert abs(integrate(-s / 2 - 10, s / 2 + 10, -10, 10) - 1.0) < 1e-10
    (x0, x1), (y0, y1) = exp1.bridge_box(s)
    assert abs(integrate(x0, x1, y0, y1) - exp1.bridge_true_mass(s)) < 1e-10
    # the depth of the gap: log p(peak) - log p(0, 0); for s = 2 the mixture's peak is at 0 (flat top)
    depth = exp1.peak_log_density(s) - exp1.log_density(np.zeros((1, 2)), s)[0]
    assert depth >= 0 and (depth < 1e-12 if s == 2 else abs(depth - (s * s / 8 - math.log(2.0))) < 1e-3)


def test_exp_disconnected_support_quick_runs(tmp_path):
    out = run("scripts/exp_disconnected_support.py", "--quick", "--separations", "4", "16", "--out", str(tmp_path))
    assert out.startswith("--quick: a smoke run")
    for title in ("\nTraining (60 steps", "\nlog|det df/dx| (nats)", "\nMass of the bridge B"):
        assert title in out, title
    rows = [line.split() for line in out.splitlines()]
    for model in ("realnvp", "spline"):          # one row per (model, s) in each of the three tables
        for s in ("4", "16"):
            assert sum(r[:2] == [model, s] for r in rows) == 3, (model, s)
    assert "(a --quick smoke run: these numbers are not the experiment's)" in out
    assert (tmp_path / "disconnected_support_density.png").exists() or not HAVE_MATPLOTLIB
    assert (tmp_path / "disconnected_support_logdet.png").exists() or not HAVE_MATPLOTLIB


def test_exp_forgotten_dequantization_quick_runs(tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn is not installed: the digits ship with it "
                                          "(pip install \"npflows[digits]\", or .[test])")
    out = run("scripts/exp_forgotten_dequantization.py", "--quick", "--out", str(tmp_path))
    assert out.startswith("--quick: a smoke run")
    for name in ("raw", "dequantized"):
        assert sum(f"{name:<11} epoch" in line for line in out.splitlines()) == 3, name
    rows = {r[0]: r for r in (line.split() for line in out.splitlines()) if r and r[0] in ("raw", "dequantized")
            and len(r) >= 9 and r[1] == "3"}
    assert sorted(rows) == ["dequantized", "raw"]
    for r in rows.values():                     # 3 epochs of a tiny MAF: finite and between 0 and 10 bits/dim
        assert 0 < float(r[3]) < 10 and 0 < float(r[5]) < 10
    assert "(a --quick smoke run: these numbers are not the experiment's)" in out
    assert (tmp_path / "forgotten_dequantization.png").exists() or not HAVE_MATPLOTLIB
