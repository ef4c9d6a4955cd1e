"""scripts/train_digits.py end to end as a smoke run (--quick: a tiny spline flow, 2 epochs, 2 draws; a few
seconds).  Its measured figures are in its docstring.  Skips without scikit-learn, which ships the digits."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_SKLEARN = "scikit-learn is not installed: the digits ship with it (pip install \"npflows[digits]\", or .[test])"


def run(*args, timeout=120):
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_train_digits_quick_trains_reports_saves_and_draws(tmp_path):
    pytest.importorskip("sklearn", reason=NO_SKLEARN)
    import npflows as nf
    out = run("scripts/train_digits.py", "--quick", "--out", str(tmp_path))
    assert out.startswith("--quick: a smoke run") and "1257 train / 180 validation / 360 test" in out
    assert "epoch    1/2  train" in out and "epoch    2/2  train" in out and "total" in out
    row = next(line for line in out.splitlines() if line.startswith("spline (autoregressive"))
    test_bpd, stderr = (float(v) for v in row.split()[-4:-2])
    assert 2.0 < test_bpd < 5.0 and 0 < stderr < 0.1       # a barely trained model
    assert "baseline: per-pixel categorical" in out and "2.43" in out and "2.46" in out
    assert out.count("(a --quick smoke run: not meant to meet it)") == 2 and "MISSES" not in out
    flow, params, config = nf.load(str(tmp_path / "model.npz"))
    assert config["model"] == "spline" and config["quick"] and len(config["history"]["epoch"]) == 2
    assert abs(config["results"]["test_bpd"] - test_bpd) < 1e-4
    assert all(v.dtype == np.float32 for v in params.values())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out
    else:
        for name in ("samples.png", "interpolation.png", "history.png"):
            assert (tmp_path / name).stat().st_size > 1000, name


def test_train_digits_set_overrides_and_rejects_unknown_keys():
    out = run("scripts/train_digits.py", "--list", "--set", "layers=7", "--set", "hidden=32,32", "--set", "lr=3e-4")
    assert '"layers": 7' in out and '"lr": 0.0003' in out and "32" in out
    bad = subprocess.run([sys.executable, "scripts/train_digits.py", "--list", "--set", "nonsense=1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown key" in bad.stderr


@pytest.mark.parametrize("model", ["realnvp", "glow"])
def test_train_digits_quick_image_models(tmp_path, model):
    """The multi-scale RealNVP and the Glow (scripts/digits_image_models.py) through the same script: --quick
    (one-channel 8x8 images behind a Reshape, width 4, 2 epochs) trains, reports, saves a model that loads to
    the same validation bits/dim, and draws its PNGs.  A few seconds each."""
    pytest.importorskip("sklearn", reason=NO_SKLEARN)
    import npflows as nf
    from npflows.data import digits
    from npflows.dequantize import dequantization_bound, discrete_bits_per_dim
    out = run("scripts/train_digits.py", "--model", model, "--quick", "--out", str(tmp_path))
    assert "epoch    2/2  train" in out
    row = next(line for line in out.splitlines() if line.startswith(model + " ("))
    test_bpd, stderr = (float(v) for v in row.split()[-4:-2])
    assert 2.0 < test_bpd < 5.0 and 0 < stderr < 0.1       # a barely trained model
    flow, params, config = nf.load(str(tmp_path / "model.npz"))
    assert config["model"] == model and config["quick"] and len(config["history"]["epoch"]) == 2
    assert flow.bijector.layers[0].out_event_shape == (1, 8, 8)       # Reshape(64, (1, 8, 8)), then the images
    assert all(v.dtype == np.float32 for v in params.values())
    # the loaded model scores the validation images as the run did: the dequantization bound recomputed here
    # with the script's own stream (seed 0, purpose TEST_VALID = 6) and draws (2 under --quick); float32 sums
    # in another order differ in the last bits, so 1e-4 bits/dim
    x_val = digits("validation")[0]
    rng = np.random.default_rng(np.random.SeedSequence([0, 6]))
    terms = dequantization_bound(lambda z: flow.log_prob(params, z), x_val, rng, 17, draws=2, per_draw=True,
                                 dtype=np.float32)
    assert abs(discrete_bits_per_dim(terms.mean(axis=0), 64).mean - config["results"]["validation_bpd"]) < 1e-4
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out
    else:
        for name in ("samples.png", "interpolation.png", "history.png"):
            assert (tmp_path / name).stat().st_size > 1000, name
