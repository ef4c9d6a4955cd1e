"""Benchmark: the MAF/IAF asymmetry at D = 8, MAF sampling at D = 64 against zuko's, spline-MAF sampling.

What is measured
----------------
**1. MAF vs IAF, D = 8.**  ``b = npflows.maf(8, n_layers=5, hidden=(64, 64))`` (5 MADE layers 8 -> 64 -> 64 -> 16,
ReLU, orders reversed between layers), its parameters the initialisation plus Gaussian noise (std 0.02) on
every entry so the flow is not the identity.  The *same* ``b`` and the same parameter dict serve

* **MAF** = ``NormalizingFlow(b, StandardNormal(8))``:
  density = ``log_prob(x)``, one parallel MADE pass per layer (``b.forward``);
  sampling = ``sample(n)``, base noise then ``b.inverse``: D = 8 sequential steps per layer.
* **IAF** = ``PushForward(b, StandardNormal(8))``:
  sampling = ``sample_and_log_prob(n)``, base noise then ``b.forward``: one pass per layer, and the density
  of the samples comes with it;
  density = ``log_prob(x)`` of a new point, ``b.inverse``: D sequential steps per layer.

The sequential side computes each MADE unit once, degree by degree (``MADE.solve_by_degree``): about one
pass of arithmetic, in D steps of small products per layer.  So the slow/fast ratio is no longer about D
(as it is for D full passes, the textbook sequential inverse): it is the cost of D small steps against one
large product per layer.  Batch 1024 (``--batch``), float64 (``--dtype``).

**2. MAF sampling, D = 64, against zuko.**  npflows: ``NormalizingFlow(maf(64, n_layers=5, hidden=(64, 64),
scale="softclip", scale_bound=-log(1e-3)), StandardNormal(64)).sample(n)`` (``--maf-hidden``), which is zuko's
elementwise map (``maf_zuko_softclip`` in the validation cases); zuko: ``zuko.flows.MAF(features=64,
transforms=5, hidden_features=(64, 64))`` (its defaults but for the number of transforms: MADE 64 -> 64 -> 64
-> 128, ReLU, orders ascending then descending, soft-clipped affine) timed as ``flow().sample((n,))`` under
``torch.no_grad()``; zuko inverts each layer with D full passes of its masked MLP.  Both in float32 and
float64, the same batch (``--batch``).  npflows' own D-pass reference solve (``solve(params, z, D)`` per layer,
what ``sample`` did before the by-degree solve) is timed beside them.  Each has its own parameters
(npflows': perturbed as above; zuko's: its initialisation): the work per call does not depend on the values.
Target: npflows' sampling at least 1.5x faster than zuko's in both dtypes.  Without torch or zuko
(or with ``--no-peers``) the section times npflows alone and says that the peer is absent.

**3. Spline-MAF sampling, D = 8 and D = 64: the by-degree solve against the D-pass reference.**
``NormalizingFlow(autoregressive_nsf(D, n_layers=5, n_bins=8, bound=3, hidden=(64, 64)), StandardNormal(D))``
(MADE D -> 64 -> 64 -> 23 D, ReLU, rational-quadratic splines with linear tails, orders reversed between
layers), its parameters perturbed as in section 1, ``sample(n)`` (each MADE unit and each coordinate's
spline once, ``MADE.solve_by_degree``) against the same draws through ``layer.solve(params, z, D)`` per layer
(D full MADE passes and D splines of all N x D entries per layer: what ``sample`` did before, and the
traceable path's solve), in ``--dtype``, batch ``--batch``.  No target: the section states the speed-up.

Every time is the MEDIAN over repeated calls after warm-up calls.  Section 1: at least 20 calls and 1 s per
cell (``--quick``: 5 calls), the four operations timed in rotation (``--block`` consecutive calls each per
round) so drift on a shared machine hits them alike.  Section 2: at least 7 calls and 2 s per cell after one
warm-up call (``--quick``: 2), the three samplers of a dtype in rotation, one call at a time.  Section 3: the
two samplers in rotation, one call at a time, each warmed up by the correctness check's call; at D = 8 at
least 7 calls and 2 s per cell, at D = 64 (where one D-pass call takes about 15 s at batch 1024) at least
3 calls (``--quick``: 2 and 1).  BLAS is pinned to one thread with ``threadpoolctl.threadpool_limits(1)`` and
torch with ``torch.set_num_threads(1)``; the settings are printed.  Memory as in ``bench_train.py``: the script sets nothing, and npflows' first call
lets glibc keep freed blocks for reuse (``npflows.perf.reuse_freed_memory``, process-wide, so zuko gets it
too); ``--keep-freed-memory`` applies the stronger ``npflows.perf.keep_freed_memory`` instead.

    python scripts/bench_autoregressive.py
    python scripts/bench_autoregressive.py --quick
"""
import argparse
import importlib.metadata
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick, exit_status, target_verdict  # noqa: E402
import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's npflows
import npflows  # noqa: E402
import npflows.perf  # noqa: E402
from npflows.bijectors.coupling import ZUKO_SOFTCLIP_BOUND  # noqa: E402
from _bench_util import blas_lines, env_lines, fmt_table, time_interleaved, use_native_kernel  # noqa: E402

DIM, N_LAYERS, HIDDEN, PARAM_NOISE = 8, 5, (64, 64), 0.02
MAF_DIM, MAF_LAYERS, MAF_HIDDEN, MAF_TARGET = 64, 5, (64, 64), 1.5
SPLINE_DIMS, SPLINE_LAYERS, SPLINE_BINS, SPLINE_BOUND, SPLINE_HIDDEN = (8, 64), 5, 8, 3.0, (64, 64)
PEER_INSTALL = ("install the CPU build of torch first with `pip install torch==2.13.0`, then `pip install zuko` "
                "(or `pip install -e .[peers]` after torch)")


def import_peer(want):
    """``(torch, zuko, None)``, or ``(None, None, why)`` when the peer is absent."""
    if not want:
        return None, None, "skipped by --no-peers"
    try:
        import torch
        import zuko
    except ImportError as e:
        return None, None, f"not importable ({e}); {PEER_INSTALL}"
    return torch, zuko, None


def section_maf_iaf(args, threadpool_info, threadpool_limits):
    """Section 1: the same bijector as MAF and IAF at D = 8, its density and sampling on both sides."""
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    b = npflows.maf(DIM, n_layers=N_LAYERS, hidden=HIDDEN)
    base = npflows.StandardNormal(DIM)
    maf, iaf = npflows.NormalizingFlow(b, base), npflows.PushForward(b, base)
    params = {k: (v + PARAM_NOISE * rng.standard_normal(v.shape)).astype(dtype) for k, v in maf.init(rng).items()}
    n = args.batch
    x = npflows.data.two_moons(n, rng).astype(dtype)                 # any points will do for a density:
    x = np.concatenate([x] * (DIM // 2), axis=1) + 0.1 * rng.standard_normal((n, DIM)).astype(dtype)

    # Correctness before timing: the IAF's sequential density of its own samples equals the parallel one.
    xs, logq = iaf.sample_and_log_prob(params, n, np.random.default_rng(1))
    err = float(np.max(np.abs(iaf.log_prob(params, xs) - logq)))
    assert err < (1e-8 if dtype == np.float64 else 1e-2), f"IAF log_prob of its own samples is off by {err}"
    assert np.isfinite(maf.log_prob(params, maf.sample(params, n, np.random.default_rng(2)))).all()

    fns = {
        "maf_density": lambda: maf.log_prob(params, x),
        "maf_sample": lambda: maf.sample(params, n, np.random.default_rng(3)),
        "iaf_sample": lambda: iaf.sample_and_log_prob(params, n, np.random.default_rng(3)),
        "iaf_density": lambda: iaf.log_prob(params, x),
    }
    reps = dict(min_repeats=5, min_time=0.0) if args.quick else dict(min_repeats=20, min_time=1.0)
    with threadpool_limits(limits=1):
        info = threadpool_info()
        t = time_interleaved(fns, block=args.block, **reps)

    n_used = sum(int(m.sum()) + m.shape[1] for layer in b.layers for m in layer.net.masks)
    print(f"\n1. MAF vs IAF at D = {DIM}: the same masked affine autoregressive bijector in NormalizingFlow and "
          f"PushForward")
    print("BLAS pools during timing:")
    for line in blas_lines(info):
        print(line)
    print(f"model: maf({DIM}, n_layers={N_LAYERS}, hidden={HIDDEN}), MADE {DIM}-{'-'.join(map(str, HIDDEN))}-"
          f"{2 * DIM} ReLU, {n_used} parameters in use ({sum(v.size for v in params.values())} stored, the rest "
          f"masked); {dtype.name}, batch {n}; "
          f"median of >= {reps['min_repeats']} calls, in rotation, {args.block} consecutive per round; "
          f"IAF self-consistency max|err| = {err:.1e}\n")

    def ms(k):
        return f"{t[k][0]:.2f}"

    one, seq = "1 pass x 5", f"{DIM} steps x 5"
    rows = [["MAF = NormalizingFlow(b)", ms("maf_density"), one, ms("maf_sample"), seq,
             f"{t['maf_sample'][0] / t['maf_density'][0]:.1f}x slower"],
            ["IAF = PushForward(b)", ms("iaf_density"), seq, ms("iaf_sample"), one,
             f"{t['iaf_density'][0] / t['iaf_sample'][0]:.1f}x slower"]]
    print(fmt_table(["flow", "density ms", "work", "sampling ms", "work", "slow side / fast side"], rows))
    print(f"\ndensity: log_prob of {n} points (parallel for MAF, sequential for IAF); sampling: "
          f"{n} draws (MAF: sample, sequential; IAF: sample_and_log_prob, parallel, density included).\n"
          f"work per layer: one parallel MADE pass, or a sequential solve in D = {DIM} steps that computes each "
          f"MADE unit once (about one pass of arithmetic in small products; D full passes before).")


def _layer_params(params, i):
    prefix = f"{i}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def check_by_degree(flow, base, params, reference, n, dtype, label):
    """Correctness before timing: the same draws give the same samples by the by-degree solve
    (``flow.sample``) and by ``reference`` (D full passes per layer), and the samples map back to their
    draws; raises AssertionError otherwise.  Returns the line that reports both errors."""
    xs, xr = flow.sample(params, n, np.random.default_rng(3)), reference(np.random.default_rng(3))
    z = base.sample({}, n, np.random.default_rng(3), dtype)
    scale = max(1.0, float(np.abs(xr).max()))
    diff = float(np.abs(xs - xr).max()) / scale
    back = float(np.abs(flow.bijector.forward(params, xs)[0] - z).max())
    tol = 1e-12 if dtype == np.float64 else 1e-4
    assert diff < tol and back < 1e3 * tol, f"{label}: by-degree vs D-pass {diff:.1e}, round trip {back:.1e}"
    return f"{label}: by-degree vs D-pass sample max|diff| / max|x| = {diff:.1e}, max|f(x) - z| = {back:.1e}"


def section_maf_vs_zuko(args, threadpool_info, threadpool_limits, torch, zuko, why_absent):
    """Section 2: MAF sampling at D = 64, npflows (by-degree solve and the D-pass reference) against zuko.
    Returns the list of dtypes whose target was missed."""
    hidden = tuple(args.maf_hidden)
    n, D = args.batch, MAF_DIM
    b = npflows.maf(D, n_layers=MAF_LAYERS, hidden=hidden, scale="softclip", scale_bound=ZUKO_SOFTCLIP_BOUND)
    base = npflows.StandardNormal(D)
    flow = npflows.NormalizingFlow(b, base)
    reps = dict(min_repeats=2, min_time=0.0, warmup=1) if args.quick else dict(min_repeats=7, min_time=2.0, warmup=1)
    rows, missed, checks = [], [], []
    for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
        rng = np.random.default_rng(0)
        params = {k: (v + PARAM_NOISE * rng.standard_normal(v.shape)).astype(dtype)
                  for k, v in flow.init(rng).items()}
        layers = [(i, layer, _layer_params(params, i)) for i, layer in enumerate(b.layers)][::-1]

        def reference(rng):              # what sample did before: D full MADE passes per layer
            x = base.sample({}, n, rng, dtype)
            for _, layer, p in layers:
                x = layer.solve(p, x, D)[0]
            return x

        checks.append(check_by_degree(flow, base, params, reference, n, dtype, dtype.name))
        fns = {"npflows": lambda: flow.sample(params, n, np.random.default_rng(3)),
               "npflows_ref": lambda: reference(np.random.default_rng(3))}
        if torch is not None:
            tdt = torch.float32 if dtype == np.float32 else torch.float64
            zflow = zuko.flows.MAF(features=D, transforms=MAF_LAYERS, hidden_features=hidden).to(tdt)

            def zuko_sample(zflow=zflow):
                with torch.no_grad():
                    return zflow().sample((n,))
            out = zuko_sample()
            assert out.dtype == tdt and tuple(out.shape) == (n, D), (out.dtype, out.shape)
            fns["zuko"] = zuko_sample
        with threadpool_limits(limits=1):
            info = threadpool_info()
            t = time_interleaved(fns, block=1, **reps)
        row = [dtype.name, f"{t['npflows'][0]:.1f}", f"{t['npflows_ref'][0]:.1f}",
               f"{t['npflows_ref'][0] / t['npflows'][0]:.1f}x"]
        if torch is not None:
            ratio = t["zuko"][0] / t["npflows"][0]
            row += [f"{t['zuko'][0]:.1f}", f"{ratio:.2f}x"]
            if ratio < MAF_TARGET:
                missed.append(dtype.name)
            rows.append((row, ratio))
        else:
            rows.append((row + ["absent", "-"], None))

    print(f"\n2. MAF sampling at D = {D} against zuko: {n} draws, {MAF_LAYERS} layers, MADE {D}-"
          f"{'-'.join(map(str, hidden))}-{2 * D} ReLU, soft-clipped affine (zuko's MAF, scale_bound = -log(1e-3))")
    print("BLAS pools during timing:")
    for line in blas_lines(info):
        print(line)
    print(f"npflows: NormalizingFlow(maf({D}, n_layers={MAF_LAYERS}, hidden={hidden}, scale='softclip'), "
          f"StandardNormal({D})).sample; 'D-pass reference': the same draws through layer.solve(params, z, {D}) "
          f"per layer (the sequential inverse before, and the traceable path's)")
    if torch is not None:
        print(f"zuko {_dist_version('zuko')}: zuko.flows.MAF(features={D}, transforms={MAF_LAYERS}, "
              f"hidden_features={hidden}).to(dtype); flow().sample(({n},)) under torch.no_grad(), "
              f"{D} passes per layer")
    else:
        print(f"zuko: ABSENT, {why_absent}: npflows is timed alone and the target is not judged")
    print(f"median of >= {reps['min_repeats']} calls after {reps['warmup']} warm-up, in rotation; checks: "
          + "; ".join(checks) + "\n")
    header = ["dtype", "npflows ms", "D-pass ref ms", "ref / npflows", "zuko ms", "zuko / npflows"]
    print(fmt_table(header, [r for r, _ in rows]))
    print()
    for (row, ratio) in rows:
        if ratio is None:
            print(f"target: MAF sampling at D = {D} at least {MAF_TARGET}x faster than zuko's ({row[0]}): "
                  f"not judged, zuko absent")
        else:
            print(f"target: MAF sampling at D = {D} at least {MAF_TARGET}x faster than zuko's ({row[0]}): "
                  f"{ratio:.2f}x, {target_verdict(ratio >= MAF_TARGET, args.quick)}")
    return missed


def section_spline_maf(args, threadpool_info, threadpool_limits):
    """Section 3: spline-MAF sampling at D = 8 and D = 64, the by-degree solve against the D-pass reference."""
    dtype, n = np.dtype(args.dtype), args.batch
    rows, checks = [], []
    for D in SPLINE_DIMS:
        b = npflows.autoregressive_nsf(D, n_layers=SPLINE_LAYERS, n_bins=SPLINE_BINS, bound=SPLINE_BOUND,
                                       hidden=SPLINE_HIDDEN)
        base = npflows.StandardNormal(D)
        flow = npflows.NormalizingFlow(b, base)
        rng = np.random.default_rng(0)
        params = {k: (v + PARAM_NOISE * rng.standard_normal(v.shape)).astype(dtype)
                  for k, v in flow.init(rng).items()}
        layers = [(layer, _layer_params(params, i)) for i, layer in enumerate(b.layers)][::-1]

        def reference(rng, D=D, base=base, layers=layers):     # what sample did before: D full passes per layer
            x = base.sample({}, n, rng, dtype)
            for layer, p in layers:
                x = layer.solve(p, x, D)[0]
            return x

        checks.append(check_by_degree(flow, base, params, reference, n, dtype, f"D = {D}"))   # also a warm-up
        fns = {"by_degree": lambda flow=flow, params=params: flow.sample(params, n, np.random.default_rng(3)),
               "reference": lambda reference=reference: reference(np.random.default_rng(3))}
        if D <= 8:
            reps = dict(min_repeats=2, min_time=0.0) if args.quick else dict(min_repeats=7, min_time=2.0)
        else:
            reps = dict(min_repeats=1, min_time=0.0) if args.quick else dict(min_repeats=3, min_time=0.0)
        with threadpool_limits(limits=1):
            info = threadpool_info()
            t = time_interleaved(fns, block=1, warmup=0, **reps)
        rows.append([str(D), f"{t['by_degree'][0]:.1f}", f"{t['reference'][0]:.1f}",
                     f"{t['reference'][0] / t['by_degree'][0]:.1f}x", f"{t['by_degree'][1]} / {t['reference'][1]}"])

    print(f"\n3. Spline-MAF sampling: {n} draws, {SPLINE_LAYERS} layers of rational-quadratic splines "
          f"(K = {SPLINE_BINS}, linear tails at +-{SPLINE_BOUND:g}), MADE D-{'-'.join(map(str, SPLINE_HIDDEN))}-"
          f"{3 * SPLINE_BINS - 1}D ReLU, {dtype.name}")
    print("BLAS pools during timing:")
    for line in blas_lines(info):
        print(line)
    print(f"by-degree: NormalizingFlow(autoregressive_nsf(D, n_layers={SPLINE_LAYERS}, n_bins={SPLINE_BINS}, "
          f"hidden={SPLINE_HIDDEN}), StandardNormal(D)).sample, each MADE unit and each coordinate's spline once; "
          f"'D-pass reference': the same draws through layer.solve(params, z, D) per layer (the sequential "
          f"inverse before, and the traceable path's)")
    print("median of the calls counted in the last column, in rotation, after each sampler's correctness-check "
          "call; checks: " + "; ".join(checks) + "\n")
    print(fmt_table(["D", "by-degree ms", "D-pass ref ms", "ref / by-degree", "calls"], rows))


def _dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def main(argv=None):
    use_native_kernel(__file__)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--batch", help="rows per call of log_prob and sampling", type=int, default=1024)
    p.add_argument("--dtype", help="sections 1 and 3: float dtype of the model and the data", default="float64",
                   choices=["float64", "float32"])
    p.add_argument("--quick", action="store_true", help="few timed calls per cell (5; 2 in section 2): a smoke run")
    p.add_argument("--block", type=int, default=5,
                   help="section 1: consecutive calls of one operation per rotation (5: steady state; 1: cold "
                        "caches)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="call npflows.perf.keep_freed_memory() (mallopt) first; by default nothing is set and "
                        "npflows' first call lets glibc keep freed blocks (perf.reuse_freed_memory)")
    p.add_argument("--maf-hidden", type=int, nargs="+", default=list(MAF_HIDDEN),
                   help="section 2: the MADE hidden widths of both flows (default 64 64, zuko's)")
    p.add_argument("--no-peers", action="store_true", help="section 2 without torch and zuko (npflows alone)")
    p.add_argument("--sections", type=int, nargs="+", choices=[1, 2, 3], default=[1, 2, 3],
                   help="which sections to run (default 1 2 3)")
    args = p.parse_args(argv)
    announce_quick(args)
    malloc_kept = npflows.perf.keep_freed_memory() if args.keep_freed_memory else False
    reused = False if malloc_kept else npflows.perf.reuse_freed_memory()
    from threadpoolctl import threadpool_info, threadpool_limits

    torch, zuko, why_absent = import_peer(2 in args.sections and not args.no_peers)
    if torch is not None:
        torch.set_num_threads(1)
    print("MAF and IAF: the sequential side of masked autoregressive flows (affine; spline in section 3)")
    for line in env_lines(np, scipy, torch=torch,
                          extra=["BLAS pinned to 1 thread with threadpoolctl.threadpool_limits(1)"
                                 + (", torch with torch.set_num_threads(1)" if torch is not None else "")]):
        print(line)
    print("malloc: " + ("fixed thresholds by npflows.perf.keep_freed_memory() (--keep-freed-memory)" if malloc_kept
                        else "nothing set by this script; npflows.perf.reuse_freed_memory() "
                        + ("raised glibc's dynamic thresholds" if reused else "had already run or is disabled")))
    missed = []
    if 1 in args.sections:
        section_maf_iaf(args, threadpool_info, threadpool_limits)
    if 2 in args.sections:
        missed = section_maf_vs_zuko(args, threadpool_info, threadpool_limits, torch, zuko, why_absent)
    if 3 in args.sections:
        section_spline_maf(args, threadpool_info, threadpool_limits)
    if hasattr(os, "getloadavg"):
        print(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return exit_status(bool(missed), args.quick)


if __name__ == "__main__":
    sys.exit(main())
