"""scripts/demo_residual.py still runs end to end (a --quick smoke run: tiny models, 30 steps; its numbers are not
the script's results, which are in its docstring; timings are not asserted)."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_demo_residual_quick_runs(tmp_path):
    """Both datasets, the roulette run, the sweep over c and the saved models, without plots (about 5 s of CPU;
    15 s of wall time under a load of 6 on 2 cores)."""
    out = subprocess.run([sys.executable, "scripts/demo_residual.py", "--quick", "--no-plots", "--quiet",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    text = out.stdout
    assert text.startswith("--quick: a smoke run")
    assert "(a --quick smoke run: not meant to meet it)" in text and "MISSES" not in text
    for name in ("two_moons", "checkerboard"):
        assert f"{name}: test LL" in text
        assert f"saved {tmp_path / (name + '_residual.npz')}; npflows.load gives the same log_prob on 200 test " \
               f"points: True" in text
        assert (tmp_path / f"{name}_residual.npz").exists()
    assert "two_moons [roulette]: validation LL" in text
    # the sweep: one row per c, each with mean <= max iterations, in the final table
    rows = re.findall(r"^\s+(0\.\d+)\s+\d+\s+-?\d+\.\d+\s+(\d+\.\d)\s+(\d+)\s", text, flags=re.M)
    assert [float(c) for c, _, _ in rows] == [0.5, 0.7, 0.9, 0.95, 0.99, 0.999]
    assert all(1.0 <= float(mean) <= int(mx) for _, mean, mx in rows)

    # the saved file alone rebuilds a residual flow whose fixed-point inverse undoes its forward (a check on the
    # file, independent of the script's own load check)
    sys.path.insert(0, str(ROOT))
    import npflows
    flow, params, config = npflows.load(tmp_path / "two_moons_residual.npz")
    assert config["bijector"]["lipschitz"] == 0.99 and config["bijector"]["logdet"] == "exact"
    x = np.random.default_rng(0).standard_normal((20, 2))
    pb, _ = flow.split(params)
    z, ld, _ = flow.bijector.forward(pb, x)
    x_back, ld_inv = flow.bijector.inverse(pb, z)
    # each block's inverse is accurate to inv_tol max(1, |x|) = 1e-10 in its own coordinates; the layers after it
    # magnify that by their Lipschitz constants (a block inverse at most 1/(1 - c^2), ActNorm its scales), which
    # in --quick's 2-block flow leaves 1e-7 a wide margin; a wrong inverse would miss it by orders of magnitude
    np.testing.assert_allclose(x_back, x, atol=1e-7)
    np.testing.assert_allclose(ld_inv, -ld, atol=1e-7)


def test_stochastic_loss_and_grad_walks_the_chain_like_the_flow():
    """The script's own training loss for stochastic logdets walks the Sequential by hand (to pass an rng to
    every block); with exact-logdet blocks it must give flow.loss_and_grad's loss and gradients (same
    operations, summed in the same order, so agreement to 1e-12 relative; a wrong key, order or cotangent
    would differ at O(1))."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import npflows
    import demo_residual as d
    arch = dict(blocks=2, hidden=(5,), c=0.9)
    flow = d.make_flow(arch)
    rng = np.random.default_rng(3)
    x = npflows.data.load("two_moons", 64, rng, noise=0.1)
    params = d.init_params(flow, rng, x, 0.9)
    params = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}   # away from init
    loss, grads = d.stochastic_loss_and_grad(flow, np.random.default_rng(0))(params, x[:16])
    loss_ref, grads_ref = flow.loss_and_grad(params, x[:16])
    assert grads.keys() == grads_ref.keys() == params.keys()
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    for k in params:
        np.testing.assert_allclose(grads[k], grads_ref[k], rtol=1e-10, atol=1e-13, err_msg=k)
    # the rescaled raw weights give the same map as before the rescaling
    raw = flow.init(np.random.default_rng(5), x)
    scaled = d.init_params(flow, np.random.default_rng(5), x, 0.9)
    np.testing.assert_allclose(flow.log_prob(scaled, x), flow.log_prob(raw, x), rtol=1e-12)
    assert any(not np.array_equal(raw[k], scaled[k]) for k in raw)
