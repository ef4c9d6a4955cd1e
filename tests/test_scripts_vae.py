"""scripts/demo_vae.py and scripts/demo_vae_flow.py end to end as smoke runs (--quick: tiny models, a few epochs,
a few seconds each).  Their measured figures are in their docstrings.  Skip without scikit-learn, which ships the
digits."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_SKLEARN = "scikit-learn is not installed: the digits ship with it (pip install \"npflows[digits]\", or .[test])"


def run(*args, timeout=180):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_demo_vae_quick_trains_three_posteriors_reports_the_gaps_and_draws(tmp_path):
    pytest.importorskip("sklearn", reason=NO_SKLEARN)
    out = run("scripts/demo_vae.py", "--quick", "--out", str(tmp_path))
    assert out.startswith("--quick: a smoke run") and "1257 train / 180 validation / 360 test" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("gaussian ", "planar ", "iaf ")) and "+-" in line}
    assert set(rows) == {"gaussian", "planar", "iaf"}
    for name, r in rows.items():
        elbo, iw = float(r[3]), float(r[6])
        assert -64 * np.log(2) < elbo <= iw < 0, (name, elbo, iw)     # better than coin flips, IW above ELBO
    assert "2 seed(s) [0, 1]" in out and out.count(" seed 1: ELBO ") == 3
    assert "ConditionalPlanar(dim=2, context_dim=4)" in out and "update='gated'" in out
    assert out.count("(a --quick smoke run: not meant to meet it)") == 5 and "MISSES" not in out
    for post in ("gaussian", "planar", "iaf"):
        with np.load(tmp_path / f"vae_{post}_seed1.npz", allow_pickle=False) as f:
            config = json.loads(str(f["__config__"]))
            assert config["posterior"] == post and config["seed"] == 1 and any(k.startswith("enc.") for k in f.files)
    if _have_matplotlib():
        for name in ("reconstructions.png", "samples.png", "latent.png", "elbo_curves.png"):
            assert (tmp_path / name).stat().st_size > 1000, name
    else:
        assert "matplotlib is not installed" in out


def test_demo_vae_flow_quick_trains_and_reports_bits_per_dim_bounds(tmp_path):
    pytest.importorskip("sklearn", reason=NO_SKLEARN)
    out = run("scripts/demo_vae_flow.py", "--quick", "--out", str(tmp_path))
    assert out.startswith("--quick: a smoke run") and "epoch    2/2" in out
    elbo = next(line for line in out.splitlines() if "ELBO bound" in line and line.startswith("VAE"))
    iw = next(line for line in out.splitlines() if "IW bound" in line and line.startswith("VAE"))
    e_bpd, iw_bpd = float(elbo.split()[-3]), float(iw.split()[-3])
    assert 2.0 < iw_bpd <= e_bpd < 6.0, (e_bpd, iw_bpd)     # a barely trained model; IW tighter
    assert "baseline: per-pixel categorical" in out and "2.4300" in out and "2.4600" in out
    assert out.count("(a --quick smoke run: not meant to meet it)") == 2 and "MISSES" not in out
    if _have_matplotlib():
        for name in ("samples.png", "reconstructions.png", "history.png"):
            assert (tmp_path / name).stat().st_size > 1000, name


def test_demo_vae_flow_quick_with_the_iaf_posterior_runs(tmp_path):
    pytest.importorskip("sklearn", reason=NO_SKLEARN)
    out = run("scripts/demo_vae_flow.py", "--quick", "--posterior", "iaf", "--flow", "maf", "--no-plots",
              "--out", str(tmp_path))
    assert "VAE, flow decoder (maf), iaf posterior: ELBO bound" in out
