"""scripts/bench_images.py: the smoke run prints its table (with torch, without torch, and with torch made
unimportable), and the script's torch model computes npflows' function for every option the script offers.

The torch model is an independent implementation of the same Glow (torch's convolutions, autograd for the
gradients), so agreeing with it to 1e-10 in float64 checks both sides; the float64 differences seen are
~1e-15 (rounding of sums taken in a different order), so 1e-10 leaves five orders of magnitude for
accumulation over the 2-level model and still catches any difference of formula (a changed parameter of
relative size 1e-6 already shows, see the last test).
"""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "scripts/bench_images.py"


def run(*args, env=None, timeout=180):
    out = subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env=env)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def table_rows(out):
    """The rows of the train-step table: ``[(dtype, batch, npflows ms, torch ms or None, ratio or None)]``."""
    lines = out.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("dtype ") and "npflows ms" in ln)
    rows = []
    for ln in lines[i + 2:]:
        parts = ln.split()
        if len(parts) < 5 or parts[0] not in ("float64", "float32"):
            break
        num = lambda s: None if s == "-" else float(s)  # noqa: E731
        rows.append((parts[0], int(parts[1]), float(parts[2]), num(parts[3]), num(parts[4])))
    return rows


def test_quick_without_torch_times_npflows_and_profiles_it():
    out = run("--quick", "--no-torch", "--batches", "64", "--dtypes", "float64")
    assert out.startswith("--quick: a smoke run")
    assert "torch: skipped by --no-torch" in out and "blas/openblas" in out and "num_threads=1" in out
    rows = table_rows(out)
    assert [(r[0], r[1]) for r in rows] == [("float64", 64)]
    assert rows[0][2] > 0 and rows[0][3] is None and rows[0][4] is None
    assert "where npflows' step goes, float64, batch 64" in out and "im2col copies" in out
    assert "NOT MEASURED (no torch)" in out


def test_quick_with_torch_unimportable_says_so_and_skips_the_torch_columns(tmp_path):
    """A ``torch`` package that raises ImportError, first on the path: the script must still run."""
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('torch is hidden by this test')\n")
    import os
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = run("--quick", "--no-profile", "--batches", "64", "--dtypes", "float32", env=env)
    assert "torch: SKIPPED, not importable (torch is hidden by this test)" in out and "pip install torch" in out
    assert "torch not used" in out
    rows = table_rows(out)
    assert rows and rows[0][3] is None
    assert "NOT MEASURED (no torch)" in out


def test_quick_with_torch_checks_the_same_function_and_prints_ratios():
    pytest.importorskip("torch")
    out = run("--quick", "--no-profile")
    m = re.search(r"torch vs npflows, float64, batch 64: log_prob max rel diff (\S+), loss rel diff (\S+), "
                  r"gradients \((\d+) keys\): worst \|\|diff\|\|/\|\|g\|\| (\S+)", out)
    assert m and "SAME FUNCTION (rtol 1e-10)" in out
    assert max(float(m.group(1)), float(m.group(2)), float(m.group(4))) < 1e-10 and int(m.group(3)) > 10
    assert "torch vs npflows, float32, batch 64" in out
    rows = table_rows(out)
    assert {(r[0], r[1]) for r in rows} == {(d, n) for d in ("float64", "float32") for n in (64, 256)}
    for _, _, ms_np, ms_t, ratio in rows:
        assert ms_np > 0 and ms_t > 0 and ratio == pytest.approx(ms_t / ms_np, abs=0.01)
    assert out.count("(a --quick smoke run: not meant to meet it)") == 2
    assert "torch 2" in out and "num_threads=1" in out


# ----------------------------------------------------------------------------- the torch model itself
@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_images
    return bench_images


def small_flow(bench, rng, **kw):
    import npflows
    glow = bench.build_glow(levels=2, steps=1, hidden=4, **kw)
    flow = npflows.NormalizingFlow(glow, npflows.StandardNormal(64))
    x = rng.standard_normal((6, 64))
    params = flow.init(rng, x)
    return flow, {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in params.items()}, x


OPTIONS = [dict(), dict(conv="plain"), dict(layout="scale_shift", shift_first=False, scale="exp"),
           dict(layout="shift_scale", scale="sigmoid"), dict(scale="tanh", factor_out="first"),
           dict(scale="softplus", squeeze="space_to_depth"), dict(scale="softclip", squeeze="checkerboard"),
           dict(scale="neg_logsigmoid", conv="plain", factor_out="first")]


@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_torch_model_computes_npflows_function(bench, kw):
    import torch
    a = bench.agreement(torch, *small_flow(bench, np.random.default_rng(1), **kw), np.float64)
    assert a["n"] == 2 * (2 + (1 if kw.get("conv") == "plain" else 3) + 6)   # per level: ActNorm2d, 1x1 conv, net
    assert max(a["lp"], a["loss"], a["grad"], a["gmax"]) < 1e-10, a


def test_torch_model_computes_npflows_function_with_the_split_prior(bench):
    """The training script's Glow with ``prior=True`` (a coupling of the factored-out half appended to stage 0)."""
    import torch
    import npflows
    from digits_image_models import build_glow
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 64))
    flow, params = build_glow(rng, x, K=1, L=2, hidden=4, lu=True, prior=True)
    assert len(flow.bijector.layers[1].stages[0].layers) == 1 + 3 + 1
    params = {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in params.items()}
    a = bench.agreement(torch, flow, params, x, np.float64)
    assert a["n"] == len(params) == 2 * (2 + 3 + 6) + 6
    assert max(a["lp"], a["loss"], a["grad"], a["gmax"]) < 1e-10, a
    assert isinstance(flow.base, npflows.StandardNormal)


def test_the_agreement_check_can_fail(bench):
    """Give the torch model one parameter changed by 1e-6 relative: its log_prob must differ by far more
    than the 1e-10 the benchmark accepts."""
    import torch
    flow, params, x = small_flow(bench, np.random.default_rng(2))
    key = next(k for k in params if k.endswith("net.W0"))
    bad = dict(params)
    bad[key] = params[key] * (1 + 1e-6)
    _, log_prob, _ = bench.torch_model(torch, flow, bad, np.float64)
    with torch.no_grad():
        lp_t = log_prob(torch.from_numpy(x)).numpy()
    lp_np = flow.log_prob(params, x)
    assert np.max(np.abs(lp_t - lp_np) / np.abs(lp_np)) > 1e-9
