"""Distillation as in Parallel WaveNet: a MAF teacher fitted to two-moons, an IAF student fitted to the teacher.

Parallel WaveNet (van den Oord et al. 2017, arXiv:1711.10433) trains a density model that is fast to
evaluate and slow to sample (the teacher), then an inverse autoregressive student that is fast to sample,
by minimising the reverse KL between them on the student's own samples ("probability density
distillation").  Here both are ``npflows.maf`` bijectors, used in the two flows of ``npflows.core.flows``:

* **teacher** ``NormalizingFlow(maf(2, n_layers=5, hidden=(64, 64), scale="tanh"), StandardNormal(2))``,
  i.e. MAF (Papamakarios et al. 2017), fitted by maximum likelihood to two-moons (noise 0.1) with the
  recipe, data, split, test set and seeds of ``scripts/demo_maf.py`` (imported from it: data streams, bias
  spreading, helpers; the recipe's numbers are its defaults, restated in ``TEACHER``): 8,000 Adam steps of
  batch 512, peak learning rate 2e-3 with cosine decay, early stopping on the 10% validation split.  The one
  change is demo_maf's ``--scale tanh`` (log-scale ``2 tanh(r)`` per layer instead of ``r``): with the
  unbounded ``exp`` scale the ReLU MADEs extrapolate the log-scales linearly and five layers compound
  them, so the teacher's density overflows a few noise widths off the moons (for the seed-0 teacher, at
  573 of 20,000 draws of N(0, I), and at points such as (1.0, 1.3)).  A student's samples go everywhere
  early in training, and the teacher must give a finite log-density and gradient at each of them.
  Its density is one parallel pass per layer; its sampling is D = 2 sequential steps per layer (each MADE
  unit computed once, in the step where its inputs are known: ``MADE.solve_by_degree``).
* **student** ``PushForward(maf(2, n_layers=5, hidden=(64, 64), activation="tanh", scale="tanh"),
  StandardNormal(2))``, i.e. IAF (Kingma et al. 2016): a sample and its density are one parallel pass per
  layer; the density of a new point (``PushForward.log_prob``, needed for the test log-likelihood) is
  D sequential steps.  It is fitted by

      min  KL(q || p_T) = E_{z ~ N(0, I)} [log q(f(z)) - log p_T(f(z))]

  with gradients through the samples (``PushForward.reverse_kl_and_grad`` with
  ``target = lambda x: teacher.log_prob_and_grad_x(teacher_params, x)``): the data are never seen.  The
  teacher is normalised, so the objective itself is the KL (no log-normaliser), and its running mean is
  what ``npflows.fit``'s progress lines print as "train".  Adam, peak learning rate 3e-3, gradient norm
  clipped at 1: three candidates from independent initialisations take 1,500 steps of 512 samples each,
  the one with the lowest KL estimate (20,000 fresh samples each) continues for 4,000 steps of 2,048
  samples with cosine decay.

Why the candidates, the larger batch and the tanh MADEs.  Reverse KL is mode-seeking, and for two
separated moons it has local optima that hold the wrong share of mass on each moon: moving mass from one
moon to the other means moving the boundary between their preimages in the base space, and only the few
samples on the thin bridge between the moons feel that pull, under gradient noise that is much larger.
During development (seed-0 teacher; one student of 10,000 steps of 512 samples, lr 3e-3, no candidates)
three student initialisations ended with 47%, 50% and 75% of the mass on the outer moon (the teacher: 50%),
KL 0.029, 0.019 and 0.19, test-LL gaps 0.13, 0.03 and 0.27 nats; the KL after 1,500-2,000 steps already
told the good starts from the stuck ones (about 0.10-0.14 against 0.18-0.42).  The larger batch of the
second phase lowers the noise while the decaying learning rate settles the split.  ReLU MADEs in the
student (the teacher's own architecture) reached similar KL but left "holes": sharp cuts where a few test
points get log q ~ -100 while the teacher gives them ~ -4, which alone cost 0.2-0.5 nats of mean test LL;
the tanh MADEs give smoother maps.

It reports

* the KL estimate E_q[log q - log p_T] by Monte Carlo over ``--n-eval`` (100,000) fresh student samples,
  with its standard error;
* the teacher's and the student's test log-likelihood on the same 10,000 held-out points (demo_maf's
  test set), their gap, and the exact density's mean on those points (the limit,
  ``npflows.data.two_moons_log_density``);
* the sampling time of the student (``sample_and_log_prob``: one pass per layer, density included) vs
  the teacher (``sample``: D = 2 sequential steps per layer, no density), batch ``--batch-time`` (4096):
  medians of repeated calls timed in rotation, 5 consecutive calls each per round
  (``scripts/_bench_util.time_interleaved``), BLAS pinned to one thread with threadpoolctl, memory as npflows
  leaves it (its first call lets glibc keep freed blocks: ``npflows.perf.reuse_freed_memory``).  With D = 2 the pass count
  gives at most 2x; the fixed costs (noise, base density, the one-pass forward keeping its cache for a
  backward) and the student's tanh (dearer than ReLU) take part of it, so a reference line also times the
  teacher's own layers used as an IAF (``PushForward(teacher.bijector)``, the same ReLU MADEs, one pass
  each).  ``scripts/bench_autoregressive.py`` shows the asymmetry at D = 8.

Target (issue 3): the student comes within 0.05 nats of its teacher's test log-likelihood.

Measured (default run, ``--seed`` 0-3, two runs at a time on a shared 2-core machine, single-threaded BLAS,
about 190 s each: teacher ~30 s, student ~145 s; test LL in nats on each seed's 10,000 test points; KL over
100,000 student samples +- one standard error; sampling 4,096 points, median ms):

====  ========  ========  ==========  ======  ================  =========  =========  =======  ========
seed  limit     teacher   student     gap     KL(q || p_T)      student    teacher    ratio    as IAF
====  ========  ========  ==========  ======  ================  =========  =========  =======  ========
0     -0.9994   -1.0207   -1.0456     0.0249  0.0184 +- 0.0006  13.17 ms   15.97 ms   1.21x    9.39 ms
1     -1.0139   -1.0423   -1.0725     0.0302  0.0209 +- 0.0006  13.38 ms   15.89 ms   1.19x    --
2     -1.0183   -1.0349   -1.0465     0.0116  0.0110 +- 0.0004  13.21 ms   16.16 ms   1.22x    9.31 ms
3     -1.0121   -1.0309   -1.0594     0.0284  0.0215 +- 0.0006  13.30 ms   16.29 ms   1.22x    9.52 ms
====  ========  ========  ==========  ======  ================  =========  =========  =======  ========

("as IAF": the teacher's layers as an IAF, a line added after the seed-1 run; teacher sampling is 1.7x that:
the pass count alone.  Seed 0's row is a later run alone on the machine: 189 s, the same figures to the
last digit, the times within 6% of the first.)  Every seed meets the target.

Writes into ``--out`` (default ``out/distill``): ``two_moons_distill.png`` (top: the exact, teacher and
student densities on one colour scale; bottom: test data, teacher samples, student samples) and
``teacher.npz`` / ``student.npz`` (parameters and configuration, ``npflows.save``).  Every random draw
comes from ``numpy.random.default_rng([seed, dataset id, purpose])`` (the candidates add their index):
purposes 0-6 are demo_maf's (so the teacher sees exactly its data), 10-17 the student's.

    python scripts/distill.py                  # the default run: about 3 minutes on one core
    python scripts/distill.py --quick          # tiny settings and evaluation: a smoke test (~6 s)
    python scripts/distill.py --teacher out/two_moons_maf.npz   # a teacher saved by demo_maf.py --scale tanh
                                                                # (same --seed: its test set is the held-out one)
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick, exit_status, target_verdict  # noqa: E402
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import npflows  # noqa: E402
import npflows.perf  # noqa: E402
import demo_maf as dm  # noqa: E402  (scripts/ is on sys.path when this file runs as a script)
from _bench_util import time_interleaved  # noqa: E402

# demo_maf.py's default recipe (its argparse defaults), with its --scale tanh (see the module docstring).
TEACHER = dict(steps=8000, batch=512, lr=2e-3, patience=20,
               arch=dict(n_layers=5, hidden=[64, 64], scale="tanh", order="alternate"))
# The student: candidates probed at batch 512, the best continued at batch 2048 with cosine decay.
STUDENT = dict(candidates=3, probe_steps=1500, probe_batch=512, steps=4000, batch=2048, lr=3e-3, clip_norm=1.0,
               arch=dict(n_layers=5, hidden=[64, 64], activation="tanh", scale="tanh", order="alternate"))
QUICK_STUDENT = dict(candidates=2, probe_steps=100, probe_batch=256, steps=200, batch=512)
# Purposes of the student's streams, after demo_maf's 0-6 (candidates add their index as a fourth entry).
S_INIT, S_BIASES, S_PROBE, S_PROBE_KL, S_TRAIN, KL_EVAL, TIMING, PLOT = range(10, 18)
GAP_TARGET = 0.05


def build(arch, flow_cls):
    return flow_cls(npflows.maf(2, **{**arch, "hidden": tuple(arch["hidden"])}), npflows.StandardNormal(2))


def train_teacher(args, rng, x_train, x_val):
    """The MAF teacher by maximum likelihood, demo_maf.py's recipe (or loaded from ``--teacher``)."""
    if args.teacher:
        _, params, config = npflows.load(args.teacher)
        arch = {k: config["bijector"][k] for k in ("n_layers", "hidden", "scale", "order", "activation")
                if k in config["bijector"]}
        seed = config.get("data", {}).get("seed", config.get("seed"))
        print(f"== teacher: loaded {args.teacher} ({arch}; trained with seed {seed})")
        if seed != args.seed:
            print(f"   note: --seed {args.seed} differs, so the test points are not this teacher's held-out set "
                  f"(still fresh draws)")
        return build(arch, npflows.NormalizingFlow), params, {"loaded": args.teacher, "arch": arch}, 0.0
    recipe = dict(TEACHER, steps=200 if args.quick else args.teacher_steps)
    flow = build(recipe["arch"], npflows.NormalizingFlow)
    params = dm.spread_hidden_biases(flow.bijector, flow.init(rng(dm.INIT)), rng(dm.BIASES))
    print(f"== teacher: MAF {recipe['arch']['n_layers']} layers, MADE 2-64-64-4 ReLU, scale 2 tanh(r), maximum "
          f"likelihood on {x_train.shape[0]} two-moons points; {recipe['steps']} steps, batch {recipe['batch']}, "
          f"lr {recipe['lr']:g} cosine (demo_maf.py's recipe, --scale tanh)", flush=True)
    t0 = time.perf_counter()
    params, history = npflows.fit(flow.loss_and_grad, params, x_train, rng=rng(dm.MINIBATCH),
                                  steps=recipe["steps"], batch_size=recipe["batch"], lr=recipe["lr"],
                                  schedule="cosine", val_loss=lambda q: -flow.log_prob(q, x_val).mean(),
                                  eval_every=min(100, recipe["steps"]), patience=recipe["patience"])
    recipe["stopped_at"] = history["stopped_at"]
    return flow, params, recipe, time.perf_counter() - t0


def train_student(args, rng, teacher, tparams):
    """The IAF student by reverse KL against the teacher's density: it sees the teacher, never the data.

    ``candidates`` students from independent initialisations each take ``probe_steps`` Adam steps at the
    full learning rate; the one with the lowest KL estimate (20,000 fresh samples of each) continues for
    ``steps`` steps of ``batch`` samples with cosine decay (fresh Adam state)."""
    recipe = dict(STUDENT, **(QUICK_STUDENT if args.quick else {}))
    for k in ("candidates", "probe_steps", "steps", "batch", "lr"):
        if getattr(args, "student_" + k, None) is not None:
            recipe[k] = getattr(args, "student_" + k)
    flow = build(recipe["arch"], npflows.PushForward)
    arch = recipe["arch"]
    print(f"== student: IAF {arch['n_layers']} layers, MADE 2-64-64-4 {arch['activation']}, scale 2 tanh(r); "
          f"reverse KL to the teacher on its own samples: {recipe['candidates']} candidates x "
          f"{recipe['probe_steps']} steps of {recipe['probe_batch']}, then the best {recipe['steps']} steps of "
          f"{recipe['batch']}; lr {recipe['lr']:g}, gradient norm clipped at {recipe['clip_norm']:g}", flush=True)

    def target(x):
        return teacher.log_prob_and_grad_x(tparams, x)

    def objective(n):
        return lambda p, r: flow.reverse_kl_and_grad(p, target, n, r)

    t0 = time.perf_counter()
    best = None
    for c in range(recipe["candidates"]):
        crng = lambda purpose: np.random.default_rng([args.seed, dm.DS_ID, purpose, c])  # noqa: E731
        params = dm.spread_hidden_biases(flow.bijector, flow.init(crng(S_INIT)), crng(S_BIASES))
        params, _ = npflows.fit(objective(recipe["probe_batch"]), params, rng=crng(S_PROBE),
                                steps=recipe["probe_steps"], lr=recipe["lr"], clip_norm=recipe["clip_norm"],
                                eval_every=recipe["probe_steps"])
        kl = kl_estimate(flow, params, teacher, tparams, 20_000, crng(S_PROBE_KL))[0]
        print(f"candidate {c}: KL {kl:.4f} after {recipe['probe_steps']} steps", flush=True)
        if best is None or kl < best[0]:
            best = (kl, c, params)
    recipe["chosen"] = best[1]
    params, history = npflows.fit(objective(recipe["batch"]), best[2], rng=rng(S_TRAIN), steps=recipe["steps"],
                                  lr=recipe["lr"], schedule="cosine", clip_norm=recipe["clip_norm"],
                                  eval_every=max(1, recipe["steps"] // 8))
    return flow, params, recipe, time.perf_counter() - t0


def kl_estimate(student, sparams, teacher, tparams, n, rng, chunk=20_000):
    """``(KL, standard error, samples)``: E_q[log q - log p_T] over ``n`` fresh student samples."""
    diffs, xs = [], []
    for s in range(0, n, chunk):
        x, logq = student.sample_and_log_prob(sparams, min(chunk, n - s), rng)
        diffs.append(logq - teacher.log_prob(tparams, x))
        xs.append(x)
    d = np.concatenate(diffs)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size)), np.concatenate(xs)


def plot(path, x_test, teacher, tparams, student, sparams, t_samples, s_samples, title, quick):
    """Top: exact, teacher and student densities on one grid; bottom: test data and both flows' samples."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from npflows.plotting import density_grid
    lo, hi = np.percentile(x_test, [0.1, 99.9], axis=0)
    pad = 0.1 * (hi - lo)
    xlim, ylim = (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])
    n_grid = 60 if quick else 200
    fig = Figure(figsize=(3 * 3.6, 2 * 3.6 * (ylim[1] - ylim[0]) / (xlim[1] - xlim[0]) + 1.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    dens = [("exact density", lambda g: dm.true_log_density(g, n_quad=101 if quick else 401)),   # pictures only
            ("teacher (MAF) density", lambda g: teacher.log_prob(tparams, g)),
            ("student (IAF) density", lambda g: student.log_prob(sparams, g))]
    grids = [density_grid(fn, xlim, ylim, n=n_grid) for _, fn in dens]
    vmax = max(np.nanmax(np.exp(lp)) for _, _, lp in grids)             # one colour scale for the three
    for ax, (name, _), (xx, yy, lp) in zip(axes[0], dens, grids):
        ax.pcolormesh(xx, yy, np.exp(lp), shading="auto", cmap="viridis", vmin=0.0, vmax=vmax, rasterized=True)
        ax.set_title(name)
    pts = [("test data", x_test, "tab:blue"), ("teacher samples", t_samples, "tab:orange"),
           ("student samples", s_samples, "tab:green")]
    for ax, (name, p, color) in zip(axes[1], pts):
        p = p[:5000]
        ax.scatter(p[:, 0], p[:, 1], s=1.5, alpha=0.4, color=color, linewidths=0, rasterized=True)
        ax.set_title(f"{name} ({p.shape[0]} points)")
    for ax in axes.ravel():
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--teacher-steps", help="Adam steps of the MAF teacher", type=int, default=TEACHER["steps"])
    p.add_argument("--student-candidates", type=int, default=None,
                   help=f"independent student initialisations probed (default {STUDENT['candidates']})")
    p.add_argument("--student-probe-steps", type=int, default=None,
                   help=f"steps per candidate (default {STUDENT['probe_steps']})")
    p.add_argument("--student-steps", type=int, default=None,
                   help=f"steps of the chosen candidate (default {STUDENT['steps']})")
    p.add_argument("--student-batch", type=int, default=None,
                   help=f"student samples per step after the probe (default {STUDENT['batch']})")
    p.add_argument("--student-lr", type=float, default=None, help=f"peak learning rate (default {STUDENT['lr']})")
    p.add_argument("--teacher", default=None,
                   help="load the teacher from this npflows.save file instead of training it (a previous run's "
                        "teacher.npz, or demo_maf.py --scale tanh's out/two_moons_maf.npz)")
    p.add_argument("--n-eval", type=int, default=100_000, help="student samples for the KL estimate")
    p.add_argument("--batch-time", type=int, default=4096, help="samples per call in the timing")
    p.add_argument("--seed", help="seed of every random draw", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny training and evaluation: a smoke test")
    p.add_argument("--no-plots", help="skip the PNG even when matplotlib is installed", action="store_true")
    p.add_argument("--out", help="directory for the PNG and the saved models", default=os.path.join("out", "distill"))
    args = p.parse_args(argv)
    announce_quick(args)
    t_start = time.perf_counter()
    rng = lambda purpose: np.random.default_rng([args.seed, dm.DS_ID, purpose])  # noqa: E731

    # demo_maf.py's data: the very same training, validation and test points for a given seed.
    x = npflows.data.load(dm.NAME, dm.N_TRAIN, rng(dm.TRAIN_DATA), **dm.DATA_KW)
    x_test = npflows.data.load(dm.NAME, dm.N_TEST, rng(dm.TEST_DATA), **dm.DATA_KW)
    x_train, x_val = npflows.train.split_train_val(x, dm.VAL_FRACTION, rng(dm.SPLIT))

    with dm.single_thread_blas():
        teacher, tparams, trecipe, t_teacher = train_teacher(args, rng, x_train, x_val)
        student, sparams, srecipe, t_student = train_student(args, rng, teacher, tparams)

        n_eval = 20_000 if args.quick else args.n_eval
        kl, kl_se, s_samples = kl_estimate(student, sparams, teacher, tparams, n_eval, rng(KL_EVAL))
        teacher_ll = dm.mean_log_prob(teacher, tparams, x_test)
        student_ll = dm.mean_log_prob(student, sparams, x_test)            # sequential inverse, D steps
        # The student's sequential density of its own samples equals the one-pass density of sampling.
        xs, logq = student.sample_and_log_prob(sparams, 2000, rng(PLOT))
        err = float(np.max(np.abs(student.log_prob(sparams, xs) - logq)))
        assert err < 1e-8, f"student log_prob of its own samples is off by {err}"

        nb = args.batch_time
        as_iaf = npflows.PushForward(teacher.bijector, teacher.base)   # the teacher's own layers, one pass each
        fns = {"student": lambda: student.sample_and_log_prob(sparams, nb, rng(TIMING)),
               "teacher": lambda: teacher.sample(tparams, nb, rng(TIMING)),
               "as_iaf": lambda: as_iaf.sample_and_log_prob(tparams, nb, rng(TIMING))}
        reps = dict(min_repeats=5, min_time=0.0, warmup=1) if args.quick else dict(min_repeats=30, min_time=2.0)
        times = time_interleaved(fns, block=5, **reps)
    limit = float(dm.true_log_density(x_test, n_quad=401 if args.quick else 4001).mean())
    gap = teacher_ll - student_ll
    (ms_s, n_s), (ms_t, n_t), (ms_r, _) = times["student"], times["teacher"], times["as_iaf"]

    print(f"\nKL(student || teacher) = E_q[log q - log p_T] over {n_eval} student samples: "
          f"{kl:.4f} +- {kl_se:.4f} nats (one standard error)")
    print(f"test log-likelihood on {x_test.shape[0]} held-out points: teacher (MAF) {teacher_ll:.4f}, "
          f"student (IAF, sequential inverse) {student_ll:.4f}, exact density (the limit) {limit:.4f} nats")
    print(f"sampling {nb} points, median of {min(n_s, n_t)}+ calls, BLAS 1 thread, "
          f"memory as npflows leaves it: student {ms_s:.2f} ms "
          f"(1 pass per layer, density included), teacher {ms_t:.2f} ms (2 sequential steps per layer): "
          f"teacher / student = {ms_t / ms_s:.2f}x")
    print(f"  reference: the teacher's own layers (ReLU MADEs) used as an IAF, one pass per layer: {ms_r:.2f} ms; "
          f"teacher sampling / that = {ms_t / ms_r:.2f}x (the pass count alone; the student's tanh MADEs cost "
          f"{ms_s / ms_r:.2f}x a ReLU pass)")
    print(f"training: teacher {t_teacher:.1f} s ({trecipe.get('stopped_at', 'loaded')} steps), student "
          f"{t_student:.1f} s ({srecipe['candidates']} x {srecipe['probe_steps']} + {srecipe['steps']} steps, "
          f"candidate {srecipe['chosen']} chosen); student self-consistency max|err| {err:.1e}")
    verdict = target_verdict(gap <= GAP_TARGET, args.quick)
    print(f"distill summary: teacher test LL {teacher_ll:.4f}, student test LL {student_ll:.4f}, gap {gap:.4f} "
          f"nats (target <= {GAP_TARGET}: {verdict}), KL {kl:.4f} +- {kl_se:.4f}, sampling "
          f"{ms_t / ms_s:.2f}x faster")

    os.makedirs(args.out, exist_ok=True)
    base = {"name": "StandardNormal", "dim": 2}
    written = [os.path.join(args.out, "teacher.npz"), os.path.join(args.out, "student.npz")]
    npflows.save(written[0], teacher, tparams, {"model": "NormalizingFlow", "base": base, "seed": args.seed,
                                       "bijector": {"builder": "npflows.maf", "dim": 2, **trecipe["arch"]},
                                       "train": {k: v for k, v in trecipe.items() if k != "arch"},
                                       "test_ll": teacher_ll})
    npflows.save(written[1], student, sparams, {"model": "PushForward", "base": base, "seed": args.seed,
                                       "bijector": {"builder": "npflows.maf", "dim": 2, **srecipe["arch"]},
                                       "train": {k: v for k, v in srecipe.items() if k != "arch"},
                                       "test_ll": student_ll, "kl": kl, "kl_se": kl_se})
    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib is not installed: skipping the plot (pip install 'npflows[plot]')")
        else:
            t_samples = teacher.sample(tparams, 5000, rng(PLOT))
            written.append(os.path.join(args.out, f"{dm.NAME}_distill.png"))
            plot(written[-1], x_test, teacher, tparams, student, sparams, t_samples, s_samples,
                 f"{dm.NAME}: MAF teacher {teacher_ll:.3f}, IAF student {student_ll:.3f} nats "
                 f"(limit {limit:.3f}); KL(student||teacher) {kl:.3f}", args.quick)
    print("wrote " + ", ".join(written) + f"   [{time.perf_counter() - t_start:.0f} s in all]")
    return dict(teacher_ll=teacher_ll, student_ll=student_ll, limit=limit, kl=kl, kl_se=kl_se,
                ms_student=ms_s, ms_teacher=ms_t, exit_status=exit_status(gap > GAP_TARGET, args.quick))


if __name__ == "__main__":
    sys.exit(main()["exit_status"])
