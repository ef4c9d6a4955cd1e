"""scripts/demo_rbig.py still runs (a --quick smoke run: tiny settings, about 20 s; its numbers are not asserted
beyond their being printed, finite and saved)."""
import subprocess
import sys
from pathlib import Path

import numpy as np

import npflows as nf

ROOT = Path(__file__).resolve().parents[1]


def test_demo_rbig_quick_runs_and_saves_working_models(tmp_path):
    out = subprocess.run([sys.executable, "scripts/demo_rbig.py", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert text.startswith("--quick: a smoke run")
    assert "RBIG layer 1:" in text and "(a --quick smoke run: not meant to meet it)" in text
    assert "bits/dim" in text and "categorical 2.43, logit Gaussian 2.46" in text
    for name, dim in (("two_moons_rbig.npz", 2), ("digits_rbig.npz", 64)):
        flow, params, config = nf.load(tmp_path / name)
        assert isinstance(flow.bijector, nf.RBIG) and flow.bijector.dim == dim
        assert np.all(np.isfinite(flow.sample(params, 3, np.random.default_rng(0))))


def test_demo_rbig_help():
    out = subprocess.run([sys.executable, "scripts/demo_rbig.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "RBIG" in out.stdout and "--quick" in out.stdout
