"""Benchmark: one training step of the digits Glow, npflows against the same architecture in PyTorch.

What is measured
----------------
The model is a multi-scale Glow (Kingma & Dhariwal 2018, arXiv:1807.03039) on the 8x8 digits, inside
``NormalizingFlow(glow, StandardNormal(64))`` on ``(N, 64)`` logit-space data (``npflows.data.digits("train")``
dequantized and logit-transformed by ``npflows.dequantize.preprocess``; random normal data when scikit-learn is
absent, which changes no timing).  It is the Glow that ``scripts/train_digits.py --model glow`` trains, built
by ``digits_image_models.build_glow`` with that script's architecture as the defaults of the options below
(when that module is missing, by ``npflows.bijectors.multiscale.glow`` with K=8, L=2, hidden 64, LU).
With K steps per level and L = 2::

    (64,) -> Reshape (1, 8, 8) -> Squeeze (4, 4, 4) -> K x [ActNorm2d, 1x1 conv, affine coupling]
          [-> with --prior yes: a coupling of the half that leaves, conditioned on the half that stays]
          -> factor out 2 channels (2, 4, 4) -> Squeeze (8, 2, 2) -> K x [ActNorm2d, 1x1 conv, coupling]
          -> z: the 32 factored-out values and the last 32, one flat vector, StandardNormal(64) base

Each coupling is Glow's: a channel mask (the first half conditions), a ``ConvNet`` 3x3 -> ReLU -> 1x1 -> ReLU
-> 3x3 with ``--hidden`` channels, the scale map and the layout of the network's output chosen by
``--scale`` and ``--layout`` (default Glow's: ``e^s = sigmoid(r + 2)``, shift and scale interleaved,
``(x + t) e^s``).  The parameters are the data-dependent initialisation (ActNorm) plus small Gaussian noise on
every entry, so the zero-initialised last convolutions are not zero and every gradient is non-trivial.

**The train step** is the mean negative log-likelihood of a batch and its gradient for every parameter (no
optimizer update):

* ``npflows``: ``flow.loss_and_grad(params, x)``, the hand-derived backward;
* ``torch``: the same architecture as a plain torch model (``scripts/_torch_glow.py``: ``nn.Conv2d`` for the
  network, ``F.conv2d`` with a ``(C, C, 1, 1)`` weight for the 1x1 convolution, ``pixel_unshuffle`` for the
  squeeze, ...), built from the npflows model layer by layer and given its parameters;
  ``zero_grad()`` + ``(-log_prob(x).mean()).backward()``.

Before timing, the script checks that both compute the same function: the torch model, holding a copy of the
npflows parameters, must give the same ``log_prob`` of every sample and the same gradient of every parameter
(relative difference below 1e-10 in float64; float32 is printed for information).

The table gives the median wall time per step (ms) for both dtypes and batches 64 and 256, and the ratio
torch / npflows from the same run (above 1: npflows is faster), with every cell of a (dtype, batch) timed in
rotation so a change of load hits both alike.  The target (issue 13): at batch 64 on one thread, npflows'
step at least as fast as torch's (ratio >= 1).  A profile of npflows' step at batch 64 then splits its time
into the convolutions' GEMMs, the im2col copies, the network's activations and layout copies, the other
layers' arithmetic and the rest (parameter checks, containers, base density, Python), followed by cProfile's
top functions and torch.profiler's top ops of torch's step; ``--no-profile`` skips them.

Threads: one by default (``--threads``): NumPy's BLAS through ``threadpoolctl.threadpool_limits`` and
``npflows.perf.set_blas_threads``, torch through ``torch.set_num_threads``.  The BLAS kernel is the one OpenBLAS
picks for this CPU (the script re-executes itself without a forced ``OPENBLAS_CORETYPE``; see
``_bench_util.use_native_kernel``).  Each number is the MEDIAN over at least 20 calls and 1 s per cell after 3
warm-up calls (``--quick``: a handful).

Run from the repository root::

    python scripts/bench_images.py                  # full run, a few minutes
    python scripts/bench_images.py --quick          # smoke run
    python scripts/bench_images.py --steps 4 --hidden 128 --conv plain --threads 2
"""
import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick, exit_status, target_verdict  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's npflows
import npflows  # noqa: E402
import npflows.perf  # noqa: E402
from npflows.bijectors.coupling import SCALES  # noqa: E402
from _bench_util import blas_lines, env_lines, fmt_table, time_interleaved, use_native_kernel  # noqa: E402
from bench_train import git_state, numpy_blas  # noqa: E402
from _torch_glow import torch_model, torch_step  # noqa: E402

DTYPES = {"float64": np.float64, "float32": np.float32}
PARAM_NOISE = 0.02
RTOL64 = 1e-10
TORCH_INSTALL = "install the CPU build of torch with `pip install torch==2.13.0` (or `pip install -e .[peers]`)"
NP, TORCH = "npflows", "torch"
GLOW = dict(K=8, L=2, hidden=64, lu=True, scale="logsigmoid", layout="interleaved", shift_first=True,
            factor_out="second", squeeze_order="channel_major", prior=False)
try:    # the Glow that scripts/train_digits.py trains ("--model glow"), when its module is there
    from digits_image_models import IMAGE_MODELS
    TRAIN_BUILD = IMAGE_MODELS["glow"]["build"]
    GLOW.update({k: v for k, v in IMAGE_MODELS["glow"]["arch"].items() if k in GLOW})
    GLOW_SOURCE = "scripts/digits_image_models.py, the model of train_digits.py --model glow"
except (ImportError, KeyError):
    TRAIN_BUILD, GLOW_SOURCE = None, "this script's defaults (scripts/digits_image_models.py is not there)"


# ----------------------------------------------------------------------------- the npflows model
def build_glow(levels=2, steps=8, hidden=64, conv="lu", scale="logsigmoid", layout="interleaved", shift_first=True,
               factor_out="second", squeeze="channel_major"):
    """The digits Glow as an npflows bijector ``(N, 64) -> (N, 64)``: ``npflows.glow((1, 8, 8), K=steps,
    L=levels, ..., input_shape=64)``, i.e. ``Sequential([Reshape(64, (1, 8, 8)), MultiScale(levels stages)])``,
    stage ``l`` = [Squeeze, ``steps`` x (ActNorm2d, 1x1 conv, ImageAffineCoupling(mask="channel"))], half of the
    channels factored out after every stage but the last."""
    from npflows.bijectors.multiscale import glow
    return glow((1, 8, 8), K=steps, L=levels, hidden=hidden, lu=conv == "lu", scale=scale, layout=layout,
                shift_first=shift_first, factor_out=factor_out, squeeze_order=squeeze, input_shape=64)


def find_multiscale(b):
    """The :class:`MultiScale` inside ``b`` (``b`` itself, or the last layer of a ``Sequential``)."""
    while type(b).__name__ != "MultiScale":
        b = b.layers[-1]
    return b


def make_npflows(args, x_init, rng):
    """The flow and its float64 parameters: data-dependent init on ``x_init``, then noise on every entry.
    Built by the training script's builder when it is there (the same model ``train_digits.py --model glow``
    trains, with the options given), else by :func:`build_glow`."""
    arch = dict(K=args.steps, L=args.levels, hidden=args.hidden, lu=args.conv == "lu", scale=args.scale,
                layout=args.layout, shift_first=args.shift_first == "yes", factor_out=args.factor_out,
                squeeze_order=args.squeeze, prior=args.prior == "yes")
    if TRAIN_BUILD is not None:
        flow, params = TRAIN_BUILD(rng, x_init, **arch)
    else:
        if arch["prior"]:
            raise SystemExit("bench_images: --prior yes needs scripts/digits_image_models.py")
        glow = build_glow(args.levels, args.steps, args.hidden, args.conv, args.scale, args.layout,
                          args.shift_first == "yes", args.factor_out, args.squeeze)
        flow = npflows.NormalizingFlow(glow, npflows.StandardNormal(glow.out_event_shape[0]))
        params = flow.init(rng, x_init)
    params = {k: v + PARAM_NOISE * rng.standard_normal(v.shape) for k, v in params.items()}
    return flow, params


def load_data(n, rng):
    """``(N, 64)`` logit-space digits (training split, one dequantization), and a line saying what they are."""
    try:
        images, _ = npflows.data.digits("train")
    except ImportError as e:
        return rng.standard_normal((n, 64)), f"data: random normal (N, 64): the digits need scikit-learn ({e})"
    z, _ = npflows.dequantize.preprocess(images, rng, npflows.data.DIGITS_LEVELS)
    reps = -(-n // z.shape[0])
    return np.concatenate([z] * reps)[:n], (f"data: the {images.shape[0]} training digits, dequantized and "
                                           f"logit-transformed (alpha 0.05), first {n} rows")


def describe(flow, params):
    glow = find_multiscale(flow.bijector)
    n_par = sum(v.size for v in params.values())
    st0 = glow.stages[0]
    step = [b for b in st0.layers if type(b).__name__ == "ImageAffineCoupling"][0]
    inv = [b for b in st0.layers if "1x1" in type(b).__name__][0]
    K = sum(type(b).__name__ == "ActNorm2d" for b in st0.layers)
    prior = len(glow.stages) > 1 and len(st0.layers) > 1 + 3 * K
    return (f"Glow: {len(glow.stages)} levels x {K} steps"
            f"{' (+ a prior coupling of the factored-out half before each split)' if prior else ''} "
            f"[ActNorm2d, {type(inv).__name__}, ImageAffineCoupling(mask='channel', parity={step.parity}, "
            f"scale={step.scale!r}, layout={step.layout!r}, shift_first={step.shift_first})], ConvNet "
            f"{step.net.kernel}x{step.net.kernel} -> {step.net.activation} -> 1x1 -> {step.net.activation} -> "
            f"{step.net.kernel}x{step.net.kernel}, hidden {step.net.hidden}; squeeze {st0.layers[0].order!r}, "
            f"factor_out {glow.factor_out!r}; latent shapes {glow.latent_shapes}; {n_par} parameters")


# ----------------------------------------------------------------------------- torch against npflows
def agreement(torch, flow, params, x, dtype):
    """Relative differences between torch and npflows: log_prob per sample (max over the batch of
    |diff| / |npflows|), the loss, and the gradients (worst key of ||diff|| / ||npflows|| and of the max-abs
    ratio).  ``params`` float64; the comparison runs in ``dtype``."""
    p = npflows.cast_params(params, dtype)
    xd = x.astype(dtype)
    model, log_prob, keymap = torch_model(torch, flow, p, dtype)
    lp_np = flow.log_prob(p, xd)
    with torch.no_grad():
        lp_t = log_prob(torch.from_numpy(xd)).numpy()
    lp_rel = float(np.max(np.abs(lp_t - lp_np) / np.abs(lp_np)))
    loss_np, g_np = flow.loss_and_grad(p, xd)
    loss_t = float(torch_step(torch, model, log_prob, xd)().detach())
    worst_norm, worst_key, worst_max = 0.0, None, 0.0
    for k, g in g_np.items():
        if k not in keymap:
            continue
        gt = keymap[k].grad
        gt = np.zeros_like(g) if gt is None else gt.numpy()
        d = np.linalg.norm((gt - g).ravel()) / max(np.linalg.norm(g.ravel()), np.finfo(dtype).tiny)
        dm = float(np.max(np.abs(gt - g))) / max(float(np.max(np.abs(g))), np.finfo(dtype).tiny)
        if d > worst_norm:
            worst_norm, worst_key = d, k
        worst_max = max(worst_max, dm)
    return dict(lp=lp_rel, loss=abs(loss_t - loss_np) / abs(loss_np), grad=float(worst_norm), key=worst_key,
                gmax=worst_max, n=len(g_np), dtype=str(lp_t.dtype))


# ----------------------------------------------------------------------------- the profile
class StackTimer:
    """Exclusive wall time per label of wrapped functions (a caller's time excludes its wrapped callees)."""

    def __init__(self):
        self.excl, self.calls, self._stack, self._undo = {}, {}, [], []

    def wrap(self, owner, attr, label):
        fn = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        timer = self

        def wrapper(*a, **kw):
            timer._stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                dt = time.perf_counter() - t0
                child = timer._stack.pop()
                timer.excl[label] = timer.excl.get(label, 0.0) + dt - child
                timer.calls[label] = timer.calls.get(label, 0) + 1
                if timer._stack:
                    timer._stack[-1] += dt
        setattr(owner, attr, wrapper)
        self._undo.append((owner, attr, fn))

    def restore(self):
        for owner, attr, fn in reversed(self._undo):
            setattr(owner, attr, fn)
        self._undo = []


def profile_breakdown(flow, params, x, n_steps):
    """``[(category, ms per step, calls per step)]`` and the step's total: the exclusive time of the
    convolution's pieces, the network, each layer type's own arithmetic, and the rest."""
    import npflows.nn.conv as C
    from npflows.bijectors.conv import ActNorm2d, Invertible1x1Conv, LUInvertible1x1Conv
    from npflows.bijectors.image_coupling import ImageAffineCoupling
    from npflows.bijectors.reshape import Reshape, Squeeze
    t = StackTimer()
    labels = {
        "conv GEMMs (conv_nhwc, conv_nhwc_backward: matmuls, bias, reshapes)": [(C, "conv_nhwc"), (C, "conv_nhwc_backward")],
        "im2col copies (gather, scatter)": [(C, "gather"), (C, "scatter")],
        "ConvNet: activations, NCHW<->NHWC copies": [(C.ConvNet, "forward"), (C.ConvNet, "backward")],
        "ImageAffineCoupling: split, scale map, exp, affine, concat": [(ImageAffineCoupling, "_forward"),
                                                                      (ImageAffineCoupling, "_backward")],
        "ActNorm2d": [(ActNorm2d, "_forward"), (ActNorm2d, "_backward")],
        "1x1 conv (channel matmuls, LU factors, their grads)": [
            (cls, m) for cls in (Invertible1x1Conv, LUInvertible1x1Conv) for m in ("_forward", "_backward")],
        "Squeeze, Reshape": [(cls, m) for cls in (Squeeze, Reshape) for m in ("_forward", "_backward")],
    }
    for label, targets in labels.items():
        for owner, attr in targets:
            t.wrap(owner, attr, label)
    step = lambda: flow.loss_and_grad(params, x)  # noqa: E731
    try:
        step()
        t.excl.clear()
        t.calls.clear()
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step()
        total = (time.perf_counter() - t0) / n_steps
    finally:
        t.restore()
    rows = [(label, 1e3 * t.excl.get(label, 0.0) / n_steps, t.calls.get(label, 0) / n_steps) for label in labels]
    rest = total - sum(r[1] for r in rows) / 1e3
    rows.append(("the rest: checks, Sequential/MultiScale, base density, flow, Python", 1e3 * rest, None))
    return rows, 1e3 * total


def cprofile_top(flow, params, x, n_steps, top=12):
    """cProfile's top functions by own time over ``n_steps`` steps (its per-call overhead inflates small
    functions; the shares are indicative)."""
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n_steps):
        flow.loss_and_grad(params, x)
    pr.disable()
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s)
    st.sort_stats("tottime").print_stats(top)
    lines = s.getvalue().splitlines()
    root = str(Path(npflows.__file__).resolve().parent.parent) + os.sep
    out, started = [], False
    for ln in lines:
        if ln.strip().startswith("ncalls"):
            started = True
        if started and ln.strip():
            out.append("  " + ln.replace(root, ""))
    return out


def torch_profile(torch, flow, params, x, n_steps, top=8):
    """torch.profiler's view of torch's step: ``(rows, total ms per step, convolution share)`` with rows
    ``(op, self ms per step, calls per step)``, the ops with the most own CPU time."""
    model, log_prob, _ = torch_model(torch, flow, params, x.dtype)
    step = torch_step(torch, model, log_prob, x)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(n_steps):
            step()
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ev) / 1e3 / n_steps
    conv = sum(e.self_cpu_time_total for e in ev if "conv" in e.key.lower()) / 1e3 / n_steps
    rows = [(e.key, e.self_cpu_time_total / 1e3 / n_steps, e.count / n_steps) for e in ev[:top]]
    return rows, total, conv / total


# ----------------------------------------------------------------------------- main
def main(argv=None):
    use_native_kernel(__file__)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny Glow and few repeats: a smoke run, numbers are noisy")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256], help="batch sizes (default 64 256)")
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES),
                    help="dtypes (default float64 float32)")
    ap.add_argument("--levels", type=int, default=GLOW["L"], help="scales L (each: squeeze, K steps, factor out half)")
    ap.add_argument("--steps", type=int, default=GLOW["K"], help="Glow steps per level K")
    ap.add_argument("--hidden", type=int, default=GLOW["hidden"], help="channels of the coupling network's hidden layers")
    ap.add_argument("--conv", choices=("lu", "plain"), default="lu" if GLOW["lu"] else "plain",
                    help="1x1 convolution: LU-factorised or dense")
    ap.add_argument("--scale", choices=list(SCALES), default=GLOW["scale"],
                    help="the coupling's scale map (Glow's: logsigmoid, e^s = sigmoid(r + 2))")
    ap.add_argument("--layout", choices=("interleaved", "scale_shift", "shift_scale"), default=GLOW["layout"],
                    help="how (r, t) are read off the network's output channels (Glow's: interleaved)")
    ap.add_argument("--shift-first", choices=("yes", "no"), default="yes" if GLOW["shift_first"] else "no",
                    help="yes: Glow's (x + t) e^s; no: RealNVP's x e^s + t")
    ap.add_argument("--factor-out", choices=("first", "second"), default=GLOW["factor_out"],
                    help="which half of the channels leaves after each level (Glow's: second)")
    ap.add_argument("--squeeze", choices=("channel_major", "space_to_depth", "checkerboard"),
                    default=GLOW["squeeze_order"], help="the squeeze's channel order (Glow's: channel_major)")
    ap.add_argument("--prior", choices=("yes", "no"), default="yes" if GLOW["prior"] else "no",
                    help="Glow's split2d prior as a coupling of the factored-out half (digits_image_models.with_prior)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS and torch threads")
    ap.add_argument("--block", type=int, default=5,
                    help="consecutive calls of one implementation per rotation (default 5: the steady state of a "
                         "training loop; 1: single calls interleaved)")
    ap.add_argument("--no-torch", action="store_true", help="skip torch (npflows alone, and its profile)")
    ap.add_argument("--no-profile", action="store_true", help="skip the profile of npflows' step")
    ap.add_argument("--profile-batch", type=int, default=64, help="batch of the profile")
    args = ap.parse_args(argv)
    announce_quick(args)
    if args.quick:
        args.steps, args.hidden = min(args.steps, 2), min(args.hidden, 8)
    if args.threads < 1 or args.levels < 1 or args.steps < 1 or args.hidden < 1:
        ap.error("--threads, --levels, --steps and --hidden must be at least 1")
    t_start = time.perf_counter()
    npflows.perf.set_blas_threads(args.threads)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        sys.exit("bench_images: needs threadpoolctl to pin the BLAS threads: `pip install threadpoolctl` "
                 "(or `pip install -e .[bench]`)")
    torch, skipped = None, None
    if args.no_torch:
        skipped = "torch: skipped by --no-torch"
    else:
        try:
            import torch
        except ImportError as e:
            skipped = f"torch: SKIPPED, not importable ({e}); {TORCH_INSTALL}. Only npflows is timed."
    if torch is not None:
        torch.manual_seed(0)
        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass

    def reps():
        if args.quick:
            return dict(min_repeats=3, min_time=0.05, warmup=1)
        return dict(min_repeats=20, min_time=1.0, warmup=3)

    rng = np.random.default_rng(0)
    data, data_line = load_data(max(args.batches + [args.profile_batch, 256]), rng)
    flow, params64 = make_npflows(args, data[:256], rng)

    with threadpool_limits(limits=args.threads):
        print("=" * 100)
        print("bench_images: one training step of the digits Glow (loss and every gradient), npflows vs torch")
        print(describe(flow, params64))
        print(f"configuration: --levels {args.levels} --steps {args.steps} --hidden {args.hidden} --conv {args.conv} "
              f"--scale {args.scale} --layout {args.layout} --shift-first {args.shift_first} "
              f"--factor-out {args.factor_out} --squeeze {args.squeeze} --prior {args.prior}; defaults and builder: "
              f"{GLOW_SOURCE}"
              + ("  [--quick shrinks the model]" if args.quick else ""))
        print(data_line)
        extra = [f"npflows {npflows.__version__} from {Path(npflows.__file__).parent} ({git_state()})", numpy_blas()]
        for line in env_lines(np, scipy, torch, extra):
            print(line)
        print(f"thread pools while measuring (threadpoolctl, threadpool_limits({args.threads}); npflows.perf."
              f"set_blas_threads({args.threads})" + (f"; torch.set_num_threads({args.threads})" if torch else "")
              + "):")
        for line in blas_lines(threadpool_info()):
            print(line)
        if torch is not None:
            print(f"torch {torch.__version__}: num_threads={torch.get_num_threads()}, "
                  f"interop={torch.get_num_interop_threads()}, mkldnn={torch.backends.mkldnn.is_available()}, "
                  f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
        r = reps()
        print(f"timing: median of >= {r['min_repeats']} calls and >= {r['min_time']} s per cell after "
              f"{r['warmup']} warm-up calls; npflows and torch timed in rotation, {args.block} consecutive call(s) "
              "each per round" + ("  [--quick]" if args.quick else ""))
        if skipped:
            print(skipped)

        # ---------------------------------------------------------------- the same function?
        agree_ok = None
        if torch is not None:
            xa = data[:args.batches[0]]
            for dname in args.dtypes:
                a = agreement(torch, flow, params64, xa, DTYPES[dname])
                line = (f"torch vs npflows, {dname}, batch {len(xa)}: log_prob max rel diff {a['lp']:.2e}, loss rel "
                        f"diff {a['loss']:.2e}, gradients ({a['n']} keys): worst ||diff||/||g|| {a['grad']:.2e} "
                        f"({a['key']}), worst max|diff|/max|g| {a['gmax']:.2e}")
                if dname == "float64":
                    agree_ok = max(a["lp"], a["loss"], a["grad"]) < RTOL64
                    line += f"  {'SAME FUNCTION' if agree_ok else 'MISMATCH'} (rtol {RTOL64:g})"
                else:
                    line += "  (float32 rounding: for information)"
                print(line)
        print("=" * 100, flush=True)
        if agree_ok is False:
            print("bench_images: the torch model does not compute npflows' function; not timing it")
            return 1

        # ---------------------------------------------------------------- timing
        results = {}
        for dname in args.dtypes:
            dt = DTYPES[dname]
            p = npflows.cast_params(params64, dt)
            for n in args.batches:
                x = data[:n].astype(dt)
                fns = {NP: lambda p=p, x=x: flow.loss_and_grad(p, x)}
                if torch is not None:
                    model, log_prob, _ = torch_model(torch, flow, p, dt)
                    fns[TORCH] = torch_step(torch, model, log_prob, x)
                t0 = time.perf_counter()
                for impl, (ms, calls) in time_interleaved(fns, block=args.block, **reps()).items():
                    results[(impl, dname, n)] = (ms, calls)
                print(f"  measured {dname} batch {n} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

        rows = []
        for dname in args.dtypes:
            for n in args.batches:
                ms_np, c_np = results[(NP, dname, n)]
                row = [dname, n, f"{ms_np:.2f}"]
                if torch is not None:
                    ms_t, c_t = results[(TORCH, dname, n)]
                    row += [f"{ms_t:.2f}", f"{ms_t / ms_np:.2f}", f"{c_np}/{c_t}"]
                else:
                    row += ["-", "-", f"{c_np}"]
                rows.append(row)
        print()
        print(f"train step (loss and every gradient): median wall time in ms, {args.threads} thread(s); "
              "ratio = torch / npflows (>1: npflows is faster)")
        print(fmt_table(["dtype", "batch", "npflows ms", "torch ms", "torch / npflows", "calls"], rows))

        # ---------------------------------------------------------------- profile
        if not args.no_profile:
            nb = args.profile_batch
            n_steps = 5 if args.quick else 40
            for dname in args.dtypes:
                p, x = npflows.cast_params(params64, DTYPES[dname]), data[:nb].astype(DTYPES[dname])
                prof, total = profile_breakdown(flow, p, x, n_steps)
                print()
                print(f"where npflows' step goes, {dname}, batch {nb}, {args.threads} thread(s): exclusive wall time "
                      f"per step over {n_steps} instrumented steps (total {total:.2f} ms; the timers add ~1 us per "
                      "wrapped call)")
                print(fmt_table(["part", "ms / step", "share", "calls / step"],
                                [[lab, f"{ms:.2f}", f"{100 * ms / total:.0f}%", "-" if c is None else f"{c:.0f}"]
                                 for lab, ms, c in prof], align="lrrr"))
            p, x = npflows.cast_params(params64, np.float64), data[:nb]
            print()
            print(f"cProfile, float64 batch {nb}: top functions by own time over {n_steps} steps (cProfile's "
                  "overhead inflates small functions; the ufuncs and matmuls it cannot see count in their callers)")
            for line in cprofile_top(flow, p, x, n_steps):
                print(line)
            if torch is not None:
                for dname in args.dtypes:
                    p, x = npflows.cast_params(params64, DTYPES[dname]), data[:nb].astype(DTYPES[dname])
                    rows, total, conv = torch_profile(torch, flow, p, x, n_steps)
                    print()
                    print(f"torch's step, {dname}, batch {nb}: torch.profiler's own CPU time per step over {n_steps} "
                          f"steps (total {total:.2f} ms with the profiler's overhead; ops whose name contains 'conv': "
                          f"{100 * conv:.0f}%)")
                    print(fmt_table(["op", "self ms / step", "calls / step"],
                                    [[k, f"{ms:.2f}", f"{c:.0f}"] for k, ms, c in rows]))

    # -------------------------------------------------------------------- the target
    print()
    n_fail = n_pass = 0
    if torch is None:
        print("target (npflows' step at least as fast as torch's at batch 64, one thread): NOT MEASURED (no torch)")
    elif args.threads != 1 or 64 not in args.batches:
        print("target (npflows' step at least as fast as torch's at batch 64, one thread): not checked by this run "
              "(it needs --threads 1 and batch 64)")
    else:
        for dname in args.dtypes:
            ratio = results[(TORCH, dname, 64)][0] / results[(NP, dname, 64)][0]
            ok = ratio >= 1.0
            n_pass, n_fail = n_pass + ok, n_fail + (not ok)
            print(f"target: train step at batch 64, one thread, {dname}: torch / npflows >= 1.0, measured "
                  f"{ratio:.2f}x: {target_verdict(ok, args.quick)}")
    load = " (load average at end: %.2f %.2f %.2f)" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    smoke = " (a --quick smoke run: the targets are not meant to be met)" if args.quick else ""
    print(f"{n_pass} targets met, {n_fail} missed{smoke}; total run time {time.perf_counter() - t_start:.1f} s{load}")
    return exit_status(n_fail > 0, args.quick)


if __name__ == "__main__":
    sys.exit(main())
