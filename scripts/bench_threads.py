"""Benchmark: npflows' BLAS thread policy, on a quiet machine and with every core busy.

What is measured
----------------
1. **The README's "Use" block** (two-moons, 8-coupling RealNVP, ``fit`` at batch 256 for ``--steps`` steps,
   then ``log_prob``, ``log_likelihood_and_grad`` and ``sample``), each run in a fresh process, under three
   settings:

   * ``npflows default``: nothing set, as a user runs it (npflows' policy: one BLAS thread inside its
     calls, ``npflows.perf``);
   * ``pinned (OPENBLAS_NUM_THREADS=1)``: BLAS held to one thread for the whole process, the user-side fix;
   * ``BLAS default (NPFLOWS_BLAS_THREADS=default)``: npflows leaves BLAS alone, so OpenBLAS uses one thread
     per core (what npflows did before the policy).

   Each setting runs quiet, and then with ``os.cpu_count()`` CPU-bound processes (``while True: pass``)
   started before it and killed after it.  The target: under load, ``npflows default`` takes at most 1.2x
   the pinned time.
2. **The products behind the policy**: ``(rows x width) @ (width x width)`` float64 GEMMs at one and at
   ``os.cpu_count()`` OpenBLAS threads (threadpoolctl), quiet and under the same load, median of repeated
   calls.  A second thread pays only on large products, and only when the cores are free.

Times are wall-clock seconds of one run per cell for the block (its steps already average thousands of
calls) and median microseconds for the products.  Runs without the forced OpenBLAS kernel
(``_bench_util.use_native_kernel``).

    python scripts/bench_threads.py              # a few minutes
    python scripts/bench_threads.py --quick      # smoke run
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick, exit_status, target_verdict  # noqa: E402
import numpy as np
import scipy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))      # benchmark this checkout's npflows
from _bench_util import blas_lines, env_lines, fmt_table, use_native_kernel  # noqa: E402

SETTINGS = {
    "npflows default": {},
    "pinned (OPENBLAS_NUM_THREADS=1)": {"OPENBLAS_NUM_THREADS": "1"},
    "BLAS default (NPFLOWS_BLAS_THREADS=default)": {"NPFLOWS_BLAS_THREADS": "default"},
}
TARGET = 1.2


def use_block(steps):
    """The README's "Use" block with ``steps`` training steps; its wall time in seconds."""
    import npflows as nf
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    x = nf.data.two_moons(10_000, rng)
    flow = nf.NormalizingFlow(nf.realnvp(2, n_layers=8, hidden=(64, 64)), nf.StandardNormal(2))
    params = flow.init(rng)
    params, _ = nf.fit(flow.loss_and_grad, params, x, rng=rng, steps=steps, batch_size=256, lr=1e-3,
                       progress=False)
    flow.log_prob(params, x)
    flow.log_likelihood_and_grad(params, x)
    flow.sample(params, 1000, rng)
    return time.perf_counter() - t0


def run_child(setting, steps):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "NPFLOWS_BLAS_THREADS")}
    env.update(SETTINGS[setting])
    out = subprocess.run([sys.executable, __file__, "--child", str(steps)], env=env, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


class Load:
    """``n`` CPU-bound processes for the duration of a ``with`` block."""

    def __init__(self, n):
        self.n, self.procs = n, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def product_times(rows_list, widths, threads, repeats):
    """``{(rows, width, threads): median us}`` of ``(rows, width) @ (width, width)`` in float64."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    out = {}
    for rows in rows_list:
        for w in widths:
            a, b = rng.standard_normal((rows, w)), rng.standard_normal((w, w))
            for t in threads:
                with threadpool_limits(t, user_api="blas"):
                    for _ in range(3):
                        a @ b
                    ts = []
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        a @ b
                        ts.append(time.perf_counter() - t0)
                out[(rows, w, t)] = 1e6 * float(np.median(ts))
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(use_block(int(argv[1])))
        return 0
    use_native_kernel(__file__)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few steps and repeats: a smoke run, numbers are noisy")
    ap.add_argument("--steps", type=int, default=None, help="training steps of the block (default 500; --quick: 20)")
    args = ap.parse_args(argv)
    announce_quick(args)
    steps = args.steps or (20 if args.quick else 500)
    ncpu = os.cpu_count() or 1
    import npflows
    from threadpoolctl import threadpool_info
    print("=" * 100)
    print(f"bench_threads: the README's Use block ({steps} steps at batch 256) and float64 products, quiet and with "
          f"{ncpu} CPU-bound process(es)")
    for line in env_lines(np, scipy, extra=[f"npflows {npflows.__version__} from {Path(npflows.__file__).parent}"]):
        print(line)
    print("thread pools at start (threadpoolctl):")
    for line in blas_lines(threadpool_info()):
        print(line)
    print("=" * 100, flush=True)

    rows = []
    times = {}
    for loaded in (False, True):
        for setting in SETTINGS:
            if loaded:
                with Load(ncpu):
                    t = run_child(setting, steps)
            else:
                t = run_child(setting, steps)
            times[(setting, loaded)] = t
            print(f"  {'loaded' if loaded else 'quiet '}  {setting:45s} {t:8.2f} s", flush=True)
    for setting in SETTINGS:
        q, l = times[(setting, False)], times[(setting, True)]
        pin_q, pin_l = times[("pinned (OPENBLAS_NUM_THREADS=1)", False)], times[("pinned (OPENBLAS_NUM_THREADS=1)", True)]
        rows.append([setting, f"{q:.2f}", f"{q / pin_q:.2f}", f"{l:.2f}", f"{l / pin_l:.2f}"])
    print("\nUse block, wall seconds of one run per cell (ratio = time / pinned time in the same load state)")
    print(fmt_table(["setting", "quiet s", "quiet / pinned", f"{ncpu} busy s", "busy / pinned"], rows))

    reps = 20 if args.quick else 200
    rows_list, widths, threads = (256, 1024, 4096), (64, 256), sorted({1, ncpu})
    prod = {}
    prod[False] = product_times(rows_list, widths, threads, reps)
    with Load(ncpu):
        prod[True] = product_times(rows_list, widths, threads, reps)
    print(f"\n(rows x width) @ (width x width) float64, median us over {reps} calls; speed-up = 1 thread / {ncpu} threads")
    prow = []
    for r in rows_list:
        for w in widths:
            cells = [f"{r} x {w}"]
            for loaded in (False, True):
                one, many = prod[loaded][(r, w, 1)], prod[loaded][(r, w, threads[-1])]
                cells += [f"{one:.0f}", f"{many:.0f}", f"{one / many:.2f}"]
            prow.append(cells)
    print(fmt_table(["product", "quiet 1 thr", f"quiet {ncpu} thr", "speed-up", "busy 1 thr", f"busy {ncpu} thr",
                     "speed-up"], prow))

    ratio = times[("npflows default", True)] / times[("pinned (OPENBLAS_NUM_THREADS=1)", True)]
    met = ratio <= TARGET
    print(f"\ntarget: with every core busy, the Use block at npflows' default settings takes at most {TARGET}x the "
          f"pinned time: measured {ratio:.2f}x: {target_verdict(met, args.quick)}")
    return exit_status(not met, args.quick)


if __name__ == "__main__":
    sys.exit(main())
