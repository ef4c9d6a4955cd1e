"""Benchmark: training step, log-density and sampling of a 2-D RealNVP, npflows against its peers.

What is measured
----------------
The model is ``npflows.realnvp(2, n_layers=8, hidden=(64, 64))`` inside
``NormalizingFlow(b, StandardNormal(2))``: 8 affine couplings with alternating masks, each conditioned by
an MLP 1 -> 64 -> 64 -> 2 with ReLU (35,344 parameters).  The parameters are the initialisation plus small
Gaussian noise on every entry, so the zero-initialised last layers are not zero and the flow is not the
identity.  The data are ``npflows.data.two_moons``.

For each implementation, dtype (float64, float32) and batch (256, 4096) three operations are timed:

* **train step**: the mean negative log-likelihood of the batch and the gradient for every parameter
  (no optimizer update).  npflows: ``flow.loss_and_grad(params, x)`` with the hand-derived backward.
* **log_prob**: ``log p(x)`` for the batch alone, no gradient.
* **sample**: drawing a batch of the same size (base noise, then the inverse of the bijector).

Implementations (rows):

1. ``npflows``: the hand-derived backward.
2. ``autograd``: the *same* npflows model and parameters, but the gradient taken by HIPS autograd through
   ``flow.bijector.forward(params, x, xp=autograd.numpy)`` and ``StandardNormal.log_prob(..., xp=...)``.
   Its log_prob and sample would be npflows' own NumPy code, so those columns are not repeated.  Before
   timing, its gradient is compared with npflows' (float64 must agree to ~1e-8 relative).
3. ``nflows`` and ``zuko`` (when torch, nflows and zuko import): the same architecture built in each
   library.  Train step = ``zero_grad()`` + ``(-log_prob(x).mean()).backward()``; log_prob and sample run
   under ``torch.no_grad()``.  Their scale parameterisations differ from npflows' ``exp`` (nflows:
   ``sigmoid(r + 2) + 1e-3``; zuko: a soft-clipped ``exp``); the cost of that elementwise map is
   negligible next to the MLPs.
4. ``GEMMs only, numpy`` (and ``, torch`` when torch imports): not a flow but a floor.  Per coupling, the
   hidden 64 x 64 layer costs three (batch x 64)-by-(64 x 64) matrix products in any train step (forward
   ``H1 W``; backward ``H1^T G`` and ``G W^T``); these 24 GEMMs alone are timed.  The target lines print
   the best ratio npflows could reach if it spent nothing beyond its GEMM floor: a target above that
   bound cannot be met by a NumPy implementation that performs these products.
5. ``all npflows' products``: every matrix product of npflows' own train step (11 per coupling and chunk
   of rows, with the shapes and layouts of ``npflows/nn/mlp.py``), alone.  npflows' step divided by this
   is what its elementwise work, checks and Python cost on top of BLAS.

Threads: one by default (``--threads``), for every implementation: NumPy's BLAS through
``threadpoolctl.threadpool_limits`` and ``npflows.perf.set_blas_threads``, torch through
``torch.set_num_threads``.  With ``--threads 2`` an extra row times npflows at its default policy (one BLAS
thread inside its calls, whatever the process uses).  Memory: the script sets nothing; npflows' first call
lets glibc keep freed blocks for reuse (``npflows.perf.reuse_freed_memory``), which is process-wide, so
every row runs with it (``--keep-freed-memory`` applies the stronger ``mallopt`` instead).  Each number is
the MEDIAN over repeated calls after a warm-up (at least 20 calls and at least 1 s per cell; 10 calls at
batches >= 4096; ``--quick`` uses far fewer).  The ratio columns divide a row's time by npflows' time for
the same dtype and batch, so a ratio above 1 means npflows is faster.  The summary checks the targets of
the project (issue 12): at one thread, npflows' train step at least 3x faster than autograd, at least
1.6x (batch 4096) and 3x (batch 256) faster than the faster of nflows and zuko, in both dtypes; log_prob at
batch 4096 at least 1.5x faster than the faster peer; the train step at most 1.5x the time of its own
matrix products; at more threads, never slower than the faster peer.

Run from the repository root::

    python scripts/bench_train.py            # full run, a couple of minutes
    python scripts/bench_train.py --quick    # smoke run
    python scripts/bench_train.py --no-peers --dtypes float64 --batches 256
    python scripts/bench_train.py --threads 2
"""
import argparse
import importlib.metadata
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick, exit_status, target_verdict  # noqa: E402
import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's npflows
import npflows  # noqa: E402
import npflows.perf  # noqa: E402
from _bench_util import blas_lines, env_lines, fmt_table, time_interleaved, use_native_kernel  # noqa: E402

DTYPES = {"float64": np.float64, "float32": np.float32}
FLOOR_NP, FLOOR_TORCH = "GEMMs only, numpy", "GEMMs only, torch"
ALL_PRODUCTS = "all npflows' products"
POLICY = "npflows, 1 BLAS thread"


def policy_call(fn):
    """``fn`` run at npflows' default thread policy (one BLAS thread) instead of the benchmark's count."""
    def run():
        prev = npflows.perf.set_blas_threads(1)
        try:
            return fn()
        finally:
            npflows.perf.set_blas_threads(prev)
    return run
N_LAYERS, HIDDEN, DIM = 8, (64, 64), 2
PARAM_NOISE = 0.02
PEER_INSTALL = ("install the CPU build of torch first with `pip install torch==2.13.0`, then "
                "`pip install nflows zuko` (or `pip install -e .[peers]` after torch)")


# ----------------------------------------------------------------------------- npflows and autograd
def git_state():
    """Commit of the checkout and whether npflows/ has uncommitted edits (what exactly was measured)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "npflows"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "git state unknown"
    if not head:
        return "not a git checkout"
    n = len(dirty.splitlines())
    return f"git {head}" + (f", {n} uncommitted change(s) under npflows/" if n else ", npflows/ clean")


def make_npflows(rng):
    """The flow and float64 parameters: init, then noise on every entry (last layers are zero at init)."""
    flow = npflows.NormalizingFlow(npflows.realnvp(DIM, n_layers=N_LAYERS, hidden=HIDDEN), npflows.StandardNormal(DIM))
    params = flow.init(rng)
    params = {k: v + PARAM_NOISE * rng.standard_normal(v.shape) for k, v in params.items()}
    return flow, params


def autograd_loss_and_grad(flow):
    """``(params, x) -> (loss, grads)`` with the gradient by HIPS autograd through the ``xp`` code path."""
    import autograd
    import autograd.numpy as anp

    def loss(params, x):
        pb, pd = flow.split(params)
        z, logdet, _ = flow.bijector.forward(pb, x, xp=anp)
        return -anp.mean(flow.base.log_prob(pd, z, xp=anp) + logdet)

    return autograd.value_and_grad(loss)


def grad_agreement(flow, vg, params, x):
    """Relative differences between autograd's and npflows' loss and gradients on one batch."""
    la, ga = vg(params, x)
    ln, gn = flow.loss_and_grad(params, x)
    if set(ga) != set(gn):
        raise RuntimeError(f"gradient keys differ: {sorted(set(ga) ^ set(gn))}")
    diff = np.sqrt(sum(np.sum((np.asarray(ga[k], np.float64) - gn[k]) ** 2) for k in gn))
    norm = np.sqrt(sum(np.sum(np.asarray(gn[k], np.float64) ** 2) for k in gn))
    worst = max(np.max(np.abs(np.asarray(ga[k], np.float64) - gn[k])) / max(np.max(np.abs(gn[k])), 1e-300)
                for k in gn)
    dtypes = {str(np.asarray(g).dtype) for g in ga.values()}
    return abs(float(la) - ln) / abs(ln), diff / norm, worst, dtypes


def gemm_floor(n, dtype, rng, torch=None):
    """A callable doing only the step's unavoidable big matrix products: per coupling, the hidden
    64 x 64 layer's forward product ``H1 @ W``, and in the backward ``H1^T @ G`` (its weight gradient)
    and ``G @ W^T`` (the cotangent passed down), each with a ``(batch, 64)`` operand; 8 couplings.

    Any implementation of this model's training step, by hand, autograd or torch, performs these 24
    GEMMs (the 1 -> 64 and 64 -> 2 layers are cheap beside them), so their time is a floor under the
    train step; with ``torch`` given, the same products by torch's BLAS.
    """
    h = rng.standard_normal((n, HIDDEN[0])).astype(dtype)
    g = rng.standard_normal((n, HIDDEN[1])).astype(dtype)
    w = rng.standard_normal(HIDDEN).astype(dtype)
    if torch is not None:
        h, g, w = torch.from_numpy(h), torch.from_numpy(g), torch.from_numpy(w)

    def run():
        for _ in range(N_LAYERS):
            h @ w
            h.T @ g
            g @ w.T
    return run


def all_products(n, dtype, rng, chunk):
    """A callable doing every matrix product of npflows' train step and nothing else: per coupling and per
    chunk of ``chunk`` rows (the flow's ``chunk_rows``), the 11 products of ``MLP.forward`` and
    ``MLP.backward`` (NumPy path, ``npflows/nn/mlp.py``), with the same shapes and memory layouts (``a.T``
    is a transposed view, as there):

    * forward: ``[x, 1] @ [W0; b0]`` (c x 2)(2 x 64), ``H1 @ W1`` (c x 64)(64 x 64), ``H2 @ W2`` (c x 64)(64 x 2);
    * backward: ``H2^T @ G2``, ``1^T @ G2``, ``G2 @ W2^T``, ``H1^T @ G1``, ``1^T @ G1``, ``G1 @ W1^T``,
      ``[x, 1]^T @ G0``, ``G0 @ W0^T``.

    The time the step spends beyond this is everything that is not a matrix product: activations, the
    coupling's arithmetic, checks and Python."""
    c = min(n, chunk)
    w = HIDDEN[0]
    r = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    xa, wb0, w1, w2, w0 = r(c, 2), r(2, w), r(w, w), r(w, 2), r(1, w)
    h1, h2, g0, g1, g2, ones = r(c, w), r(c, w), r(c, w), r(c, w), r(c, 2), np.ones(c, dtype)
    n_chunks = -(-n // c)

    def run():
        for _ in range(N_LAYERS * n_chunks):
            xa @ wb0
            h1 @ w1
            h2 @ w2
            h2.T @ g2
            ones @ g2
            g2 @ w2.T
            h1.T @ g1
            ones @ g1
            g1 @ w1.T
            xa.T @ g0
            g0 @ w0.T
    return run


def numpy_blas():
    """Which BLAS numpy itself was built against (threadpoolctl lists scipy's as well)."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"numpy's BLAS: {blas.get('name')} {blas.get('version')}"
    except Exception:  # show_config's layout is not a stable API
        return "numpy's BLAS: unknown"


# ----------------------------------------------------------------------------- torch peers
def _dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def import_peers(want):
    """``(torch or None, {name: builder}, [skip messages])``."""
    skipped = []
    if not want:
        return None, {}, ["peers (nflows, zuko): skipped by --no-peers"]
    try:
        import torch
    except ImportError as e:
        return None, {}, [f"nflows, zuko: SKIPPED, torch is not importable ({e}); {PEER_INSTALL}"]
    builders = {}
    try:
        import nflows  # noqa: F401
        builders[f"nflows {_dist_version('nflows')}"] = build_nflows
    except ImportError as e:
        skipped.append(f"nflows: SKIPPED, not importable ({e}); {PEER_INSTALL}")
    try:
        import zuko  # noqa: F401
        builders[f"zuko {_dist_version('zuko')}"] = build_zuko
    except ImportError as e:
        skipped.append(f"zuko: SKIPPED, not importable ({e}); {PEER_INSTALL}")
    return torch, builders, skipped


def build_nflows(torch):
    """8 ``AffineCouplingTransform`` with alternating masks (layer 0 transforms coordinate 1, as npflows)."""
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AffineCouplingTransform

    class Net(torch.nn.Sequential):
        # nflows calls transform_net(inputs, context); a plain Sequential takes one argument.
        def forward(self, x, context=None):
            return super().forward(x)

    def net(n_in, n_out):
        return Net(torch.nn.Linear(n_in, HIDDEN[0]), torch.nn.ReLU(), torch.nn.Linear(HIDDEN[0], HIDDEN[1]),
                   torch.nn.ReLU(), torch.nn.Linear(HIDDEN[1], n_out))

    # nflows' mask: > 0 is transformed, <= 0 passes through and conditions.
    layers = [AffineCouplingTransform([0, 1] if i % 2 == 0 else [1, 0], net) for i in range(N_LAYERS)]
    flow = Flow(CompositeTransform(layers), StandardNormal([DIM]))
    return flow, (lambda x: flow.log_prob(x)), (lambda n: flow.sample(n))


def build_zuko(torch):
    """``zuko.flows.RealNVP``: alternating masks, MLP 1 -> 64 -> 64 -> 2 with ReLU, diagonal normal base."""
    import zuko
    flow = zuko.flows.RealNVP(features=DIM, transforms=N_LAYERS, hidden_features=HIDDEN)
    return flow, (lambda x: flow().log_prob(x)), (lambda n: flow().sample((n,)))


def torch_ops(torch, label, model, log_prob, sample, tdt, x, n):
    """The three timed callables of a torch flow on the batch ``x`` (numpy) and sample size ``n``."""
    xt = torch.from_numpy(x)

    def train_step():
        model.zero_grad()
        (-log_prob(xt).mean()).backward()

    def logp():
        with torch.no_grad():
            return log_prob(xt)

    def samp():
        with torch.no_grad(), torch_default_dtype(torch, tdt):
            return sample(n)

    if not (samp().dtype == logp().dtype == tdt):
        raise RuntimeError(f"{label}: expected {tdt} results")
    return {(label, "train"): train_step, (label, "logp"): logp, (label, "sample"): samp}


@contextmanager
def torch_default_dtype(torch, dtype):
    # nflows' StandardNormal.sample draws in the default dtype, not the model's: a float64 model needs this.
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# ----------------------------------------------------------------------------- timing
def main(argv=None):
    use_native_kernel(__file__)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few repeats: a smoke run, numbers are noisy")
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 4096], help="batch sizes (default 256 4096)")
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES),
                    help="dtypes (default float64 float32)")
    ap.add_argument("--no-peers", action="store_true", help="skip nflows and zuko (and the torch import)")
    ap.add_argument("--block", type=int, default=5,
                    help="consecutive calls of one implementation per rotation (default 5: steady state as in "
                         "a training loop; 1 = single calls interleaved, a cold-cache measure)")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS and torch threads for every implementation (npflows: perf.set_blas_threads); "
                         "with more than 1, npflows is also timed at its default policy of one BLAS thread")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="call npflows.perf.keep_freed_memory() (mallopt) first; by default nothing is set: "
                         "npflows' first call lets glibc keep freed blocks (perf.reuse_freed_memory), "
                         "process-wide, so for every row alike")
    args = ap.parse_args(argv)
    announce_quick(args)
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    t_start = time.perf_counter()
    malloc_kept = npflows.perf.keep_freed_memory() if args.keep_freed_memory else False
    reused = npflows.perf.reuse_freed_memory() if not malloc_kept else False
    npflows.perf.set_blas_threads(args.threads)

    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        sys.exit("bench_train: needs threadpoolctl to pin BLAS to one thread: "
                 "`pip install threadpoolctl` (or `pip install -e .[bench]`)")
    torch, peers, skipped = import_peers(not args.no_peers)
    if torch is not None:
        torch.manual_seed(0)
        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    try:
        import autograd
        vg_version = _dist_version("autograd")
    except ImportError as e:
        autograd, vg_version = None, None
        skipped.append(f"autograd: SKIPPED, not importable ({e}); `pip install autograd` or `pip install -e .[bench]`")

    def reps(batch):
        if args.quick:
            return dict(min_repeats=3, min_time=0.05, warmup=1)
        return dict(min_repeats=20 if batch < 4096 else 10, min_time=1.0, warmup=3)

    rng = np.random.default_rng(0)
    flow, params64 = make_npflows(rng)
    data64 = {n: npflows.data.two_moons(n, rng) for n in args.batches}

    with threadpool_limits(limits=args.threads):
        print("=" * 100)
        print(f"bench_train: RealNVP D={DIM}, {N_LAYERS} affine couplings, MLP 1 -> {HIDDEN[0]} -> {HIDDEN[1]} -> 2 "
              f"relu, {sum(v.size for v in params64.values())} parameters, two_moons data")
        extra = [f"npflows {npflows.__version__} from {Path(npflows.__file__).parent} ({git_state()})",
                 f"autograd {vg_version}" if autograd is not None else "autograd not available",
                 numpy_blas()]
        for line in env_lines(np, scipy, torch, extra):
            print(line)
        print(f"thread pools while measuring (threadpoolctl, threadpool_limits({args.threads}); npflows.perf."
              f"set_blas_threads({args.threads})):")
        for line in blas_lines(threadpool_info()):
            print(line)
        r = reps(256)
        print(f"timing: median of >= {r['min_repeats']} calls and >= {r['min_time']} s per cell "
              f"(batch >= 4096: >= {reps(4096)['min_repeats']} calls), after {r['warmup']} warm-up calls; "
              f"all cells of one (dtype, batch) timed in rotation, {args.block} consecutive call(s) each per round"
              + ("  [--quick]" if args.quick else ""))
        print("malloc: " + ("fixed thresholds by npflows.perf.keep_freed_memory() (--keep-freed-memory)"
                            if malloc_kept else "nothing set by this script; npflows.perf.reuse_freed_memory() "
                            + ("raised glibc's dynamic thresholds" if reused else "had already run or is disabled")
                            + " (process-wide: every row alike)"))
        for line in skipped:
            print(line)

        vg = autograd_loss_and_grad(flow) if autograd is not None else None
        if vg is not None:
            b0 = args.batches[0]
            for name, dt in DTYPES.items():
                p, x = npflows.cast_params(params64, dt), data64[b0].astype(dt)
                dl, rel, worst, gdt = grad_agreement(flow, vg, p, x)
                verdict = "" if dt is not np.float64 else ("  OK (< 1e-8)" if rel < 1e-8 else "  MISMATCH (>= 1e-8)")
                print(f"autograd vs npflows gradient, {name}, batch {b0}: loss rel diff {dl:.2e}, "
                      f"grad rel diff (global norm) {rel:.2e}, worst per-key max-abs rel {worst:.2e}, "
                      f"autograd grad dtype {sorted(gdt)}{verdict}")
        print("=" * 100, flush=True)

        # Peer models: built once per dtype, from the same torch seed.
        models = {}
        for label, build in peers.items():
            for dname in args.dtypes:
                tdt = getattr(torch, dname)
                torch.manual_seed(0)
                with torch_default_dtype(torch, tdt):
                    model, log_prob, sample = build(torch)
                models[(label, dname)] = (model.to(tdt), log_prob, sample, tdt)

        # One round-robin group per (dtype, batch): every implementation and operation, interleaved.
        results = {}  # (impl, dtype, batch) -> {"train": ms, "logp": ms, "sample": ms}
        # Sampling draws the same base batch every call (a fresh Generator with a fixed seed): the
        # timing then never depends on which tail points one call happened to draw.
        for dname in args.dtypes:
            p = npflows.cast_params(params64, DTYPES[dname])
            for n in args.batches:
                x = data64[n].astype(DTYPES[dname])
                fns = {("npflows", "train"): lambda p=p, x=x: flow.loss_and_grad(p, x),
                       ("npflows", "logp"): lambda p=p, x=x: flow.log_prob(p, x),
                       ("npflows", "sample"): lambda p=p, n=n: flow.sample(p, n, np.random.default_rng(n))}
                if vg is not None:
                    fns[("autograd", "train")] = lambda p=p, x=x: vg(p, x)
                if args.threads > 1:
                    fns.update({(POLICY, op): policy_call(f) for (impl, op), f in list(fns.items())
                                if impl == "npflows"})
                fns[(FLOOR_NP, "train")] = gemm_floor(n, DTYPES[dname], np.random.default_rng(1))
                fns[(ALL_PRODUCTS, "train")] = all_products(
                    n, DTYPES[dname], np.random.default_rng(1),
                    npflows.core.flows.AUTO_CHUNK_ROWS[np.dtype(DTYPES[dname])] if flow.chunk_rows == "auto"
                    else (flow.chunk_rows or n))
                if torch is not None:
                    fns[(FLOOR_TORCH, "train")] = gemm_floor(n, DTYPES[dname], np.random.default_rng(1), torch)
                for label in peers:
                    fns.update(torch_ops(torch, label, *models[(label, dname)], x, n))
                t0 = time.perf_counter()
                for (impl, op), (ms, _) in time_interleaved(fns, block=args.block, **reps(n)).items():
                    results.setdefault((impl, dname, n), {})[op] = ms
                print(f"  measured {dname} batch {n} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------------- the table
    impls = (["npflows"] + ([POLICY] if args.threads > 1 else []) + (["autograd"] if vg is not None else [])
             + list(peers) + [ALL_PRODUCTS, FLOOR_NP] + ([FLOOR_TORCH] if torch is not None else []))
    rows = []
    for impl in impls:
        for dname in args.dtypes:
            for n in args.batches:
                res = results.get((impl, dname, n))
                if res is None:
                    continue
                ref = results[("npflows", dname, n)]
                cell = [f"{res[k]:.3f}" if k in res else "-" for k in ("train", "logp", "sample")]
                ratio = [f"{res[k] / ref[k]:.2f}" if k in res else "-" for k in ("train", "logp", "sample")]
                rows.append([impl, dname, n, *cell, *ratio])
    print()
    print(f"median wall time per call in ms, {args.threads} thread(s); ratio = row time / npflows time (same dtype, "
          "batch); >1 means npflows is faster")
    print(fmt_table(["implementation", "dtype", "batch", "train step ms", "log_prob ms", "sample ms",
                     "train / np", "log_prob / np", "sample / np"], rows))
    if vg is not None:
        print("(autograd: log_prob and sample are npflows' own NumPy code, so they are not repeated)")
    print(f"({FLOOR_NP!r} and {FLOOR_TORCH!r}: only the 24 (batch x 64) x (64 x 64) matrix products that any "
          "train step of this model performs, by NumPy's and torch's BLAS: a floor under every train step)")
    print(f"({ALL_PRODUCTS!r}: every matrix product npflows' train step performs (88 per chunk of rows: 11 per "
          "coupling), alone; the rest of the step is elementwise work, checks and Python)")

    # ------------------------------------------------------------------------- the targets
    print()
    print("targets (ratio = other time / npflows time, so above 1 npflows is faster):")
    n_pass = n_fail = 0

    def verdict(text, ok, bound=""):
        nonlocal n_pass, n_fail
        if ok is None:
            print(f"  {text}: NOT MEASURED")
            return
        n_pass, n_fail = n_pass + ok, n_fail + (not ok)
        print(f"  {text}: {target_verdict(ok, args.quick)}{bound}")

    def best_peer(d, n, op):
        cands = [(results[(k, d, n)][op], k) for k in peers if (k, d, n) in results]
        return min(cands) if cands else (None, None)

    for d in args.dtypes:
        for n in args.batches:
            ref, floor = results[("npflows", d, n)], results.get((FLOOR_NP, d, n))
            if args.threads == 1:
                if (("autograd", d, n)) in results:
                    ratio = results[("autograd", d, n)]["train"] / ref["train"]
                    verdict(f"train step vs autograd, {d} batch {n:>4}: need >= 3.0x, measured {ratio:5.2f}x",
                            ratio >= 3.0)
                t, k = best_peer(d, n, "train")
                need = 1.6 if n >= 4096 else 3.0
                if k is not None:
                    bound = "" if floor is None else (f"; at most {t / floor['train']:.2f}x if npflows took only its "
                                                      f"GEMM floor of {floor['train']:.2f} ms")
                    verdict(f"train step vs the faster peer ({k}), {d} batch {n:>4}: need >= {need}x, measured "
                            f"{t / ref['train']:5.2f}x", t / ref["train"] >= need, bound)
                if n >= 4096:
                    t, k = best_peer(d, n, "logp")
                    if k is not None:
                        verdict(f"log_prob vs the faster peer ({k}), {d} batch {n:>4}: need >= 1.5x, measured "
                                f"{t / ref['logp']:5.2f}x", t / ref["logp"] >= 1.5)
                prods = results.get((ALL_PRODUCTS, d, n))
                if prods is not None:
                    share = ref["train"] / prods["train"]
                    verdict(f"train step / its matrix products alone, {d} batch {n:>4}: need <= 1.5x, measured "
                            f"{share:5.2f}x", share <= 1.5)
            else:
                t, k = best_peer(d, n, "train")
                if k is not None:
                    verdict(f"train step at {args.threads} threads vs the faster peer ({k}), {d} batch {n:>4}: "
                            f"need >= 1.0x, measured {t / ref['train']:5.2f}x (npflows at its default 1 thread: "
                            f"{t / results[(POLICY, d, n)]['train']:.2f}x)", t / ref["train"] >= 1.0)
    load = " (load average at end: %.2f %.2f %.2f)" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    smoke = " (a --quick smoke run: the targets are not meant to be met)" if args.quick else ""
    print(f"{n_pass} targets met, {n_fail} missed{smoke}; total run time {time.perf_counter() - t_start:.1f} s{load}")
    return exit_status(n_fail > 0, args.quick)


if __name__ == "__main__":
    sys.exit(main())
