"""Benchmark: the CNF's density and adjoint gradient, npflows against torchdiffeq, and by solver method.

What is measured
----------------
``NormalizingFlow(CNF(2, hidden=(64, 64), activation="tanh", t in [0, 1], exact trace), StandardNormal(2))``
at rtol = atol = 1e-5 (``--tol``), batch 512 of two-moons (noise 0.1), float64, one solve over the whole
batch (``chunk_rows=None``).  The field's parameters are its initialisation with every entry perturbed by
N(0, 0.3^2) (fixed seed; the zero last layer of the initialisation would make the field 0), or, with
``--params out/two_moons_cnf.npz``, a trained model (the demo's output).

**1. npflows against torchdiffeq**, four worker processes on the same parameters and data, their calls
timed in rotation (one call of each task of each process in turn, so drifting load on a shared machine
hits all alike):

* ``npflows RK45``: the process as a user gets it, nothing set (npflows' public methods call
  ``npflows.perf.reuse_freed_memory()`` once, which lets glibc's dynamic thresholds keep freed blocks);
* ``npflows RK45, NPFLOWS_REUSE_MEMORY=0``: that call opted out, so only the CNF's own per-solve work arrays
  keep the field's intermediates from being returned to the system and faulted in again at every
  evaluation;
* ``npflows RK45, keep_freed_memory()``: after ``npflows.perf.keep_freed_memory()`` (a process-wide
  ``mallopt`` that stops glibc from returning freed memory, hence a process of its own), the reference
  for the two above.  The answers of the three are compared bit for bit;
* ``torchdiffeq dopri5`` (the ``peers`` extra; skipped, saying so, when torch or torchdiffeq is missing):
  the same field as a torch function of tensors built from npflows' parameters (``h = z W0[:2] + t W0[2]
  + b0``, tanh between layers, ``W_l`` of shape (in, out)), the exact trace by D = 2 reverse-mode passes of
  torch autograd (``create_graph`` only when the adjoint needs the trace's derivative), solved by
  ``torchdiffeq.odeint`` with ``method="dopri5"``, the Dormand-Prince 5(4) pair of scipy's RK45, at the
  same rtol and atol.

Tasks (each process builds the flow once; NFE = evaluations of the dynamics, the same on every call):

* ``log_prob``: ``flow.log_prob(params, x)``; torchdiffeq: ``odeint`` of (z, logdet) from t1 to t0 under
  ``torch.no_grad()``, plus the base density;
* ``gradient``: the mean log-likelihood and its gradient in every parameter, forward solve plus adjoint
  solve.  npflows: ``flow.log_likelihood_and_grad(params, x)``; torchdiffeq: ``odeint_adjoint`` (parameters
  as ``adjoint_params``, the adjoint solved by dopri5 at the same tolerances) and
  ``torch.autograd.grad``;
* ``adjoint``: the adjoint solve alone.  npflows: ``CNF.backward_with_stats`` from a stored forward cache;
  torchdiffeq: ``torch.autograd.grad`` on a retained graph of one ``odeint_adjoint`` forward.

The answers are compared with npflows': log_prob by the largest absolute difference (nats), the gradient
by ||g - g_npflows|| / ||g_npflows|| over all parameters.  Both solvers control the local error to the
tolerance with their own step-size rules, so they differ by about the global error of such a solve.

Everything runs on one thread: ``threadpoolctl.threadpool_limits(1)`` in every process and
``torch.set_num_threads(1)``.  Each time is the MEDIAN over at least 11 calls (``--quick``: 2) after one
warm-up call.  The calls are timed in this process around a pipe round trip to the worker, whose own
median time is printed (well under 1% of a solve).

**2. solve_ivp methods** (RK45, DOP853, LSODA; ``--methods``): log_prob and the adjoint in this process
(nothing set), median of at least 5 calls and 2 s per cell.

Targets (each gets a verdict line; a full run exits 1 when one is missed):

* npflows' log_prob and adjoint within 10% of their ``keep_freed_memory()`` times (ratio <= 1.10), as a
  user runs it and with ``NPFLOWS_REUSE_MEMORY=0``;
* npflows at least 2x faster than torchdiffeq's dopri5 for log_prob and for the gradient
  (forward + adjoint).

    python scripts/bench_cnf.py
    python scripts/bench_cnf.py --quick
    python scripts/bench_cnf.py --no-peers --methods RK45
"""
import argparse
import importlib.util
import multiprocessing
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import HelpFormatter, announce_quick, exit_status, target_verdict  # noqa: E402
import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's npflows
sys.path.insert(0, str(Path(__file__).resolve().parent))
import npflows  # noqa: E402
import npflows.perf  # noqa: E402
from _bench_util import blas_lines, env_lines, fmt_table, time_call, time_interleaved, use_native_kernel  # noqa: E402

METHODS = ("RK45", "DOP853", "LSODA")
HIDDEN = (64, 64)
NP, NP_OWN, NP_KEEP = "npflows RK45", "npflows RK45, NPFLOWS_REUSE_MEMORY=0", "npflows RK45, keep_freed_memory()"
TD = "torchdiffeq dopri5"
TASKS = ("log_prob", "gradient", "adjoint")
PEER_INSTALL = ("install the CPU build of torch first with `pip install torch==2.13.0`, then "
                "`pip install torchdiffeq` (or `pip install -e .[peers]` after torch)")


def make(tol, method, dim=2):
    b = npflows.CNF(dim, hidden=HIDDEN, activation="tanh", method=method, rtol=tol, atol=tol)
    return npflows.NormalizingFlow(b, npflows.StandardNormal(dim), chunk_rows=None)


# ----------------------------------------------------------------------------- the worker processes
def _npflows_tasks(spec, kind):
    """The npflows tasks, in a process set up as ``kind`` says (before npflows' first public call)."""
    if kind == NP_OWN:
        os.environ["NPFLOWS_REUSE_MEMORY"] = "0"
    applied = npflows.perf.keep_freed_memory() if kind == NP_KEEP else None
    params, x = spec["params"], spec["x"]
    flow = make(spec["tol"], "RK45")
    b, (pb, pd) = flow.bijector, flow.split(params)
    z, _, cache = b.forward(pb, x)
    w = np.full(x.shape[0], 1.0 / x.shape[0])
    dz, _ = flow.base.log_prob_backward(pd, z, w)
    _, _, stats = b.backward_with_stats(pb, dz, w, cache)
    _, grads = flow.log_likelihood_and_grad(params, x)
    info = [{NP: "nothing set (as a user runs it)", NP_KEEP: f"npflows.perf.keep_freed_memory() applied: {applied}",
             NP_OWN: "NPFLOWS_REUSE_MEMORY=0: npflows.perf.reuse_freed_memory() opted out"}[kind]]
    results = {"log_prob": flow.log_prob(params, x), "grad": {k: grads[k] for k in pb},
               "nfe": {"log_prob": cache["nfe"], "gradient": cache["nfe"] + stats["nfe"], "adjoint": stats["nfe"]}}
    tasks = {"log_prob": lambda: flow.log_prob(params, x),
             "gradient": lambda: flow.log_likelihood_and_grad(params, x),
             "adjoint": lambda: b.backward_with_stats(pb, dz, w, cache)}
    return tasks, results, info


def _torchdiffeq_tasks(spec):
    """The same flow in torch, solved by torchdiffeq (dopri5): the field from npflows' parameters."""
    import torch
    import torchdiffeq
    from torchdiffeq import odeint, odeint_adjoint
    torch.set_num_threads(1)
    dt = torch.float64
    P = {k: torch.tensor(v, dtype=dt, requires_grad=True) for k, v in spec["params"].items()}
    keys = [k for k in spec["params"] if not k.startswith("base.")]
    x = torch.tensor(spec["x"], dtype=dt)
    n, dim = x.shape
    n_layers = len(HIDDEN) + 1
    nfe = {"forward": 0, "adjoint": 0}

    def field(t, z):
        W0 = P["W0"]
        h = z @ W0[:dim] + t * W0[dim] + P["b0"]
        for l in range(1, n_layers):
            h = torch.tanh(h) @ P[f"W{l}"] + P[f"b{l}"]
        return h

    def dynamics(t, state):
        """d(z, logdet)/dt = (f, tr df/dz); the trace by D reverse-mode passes.  Under no_grad (log_prob, the
        adjoint's forward solve) the trace needs no graph; in the adjoint solve torchdiffeq calls this with
        grad enabled and differentiates the trace (second derivatives), so the graph is kept."""
        grad_mode = torch.is_grad_enabled()
        nfe["adjoint" if grad_mode else "forward"] += 1
        z = state[0]
        if not (grad_mode and z.requires_grad):
            z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            f = field(t, z)
            tr = torch.zeros(n, dtype=dt)
            for i in range(dim):
                tr = tr + torch.autograd.grad(f[:, i].sum(), z, create_graph=grad_mode,
                                              retain_graph=grad_mode or i < dim - 1)[0][:, i]
        return (f, tr) if grad_mode else (f.detach(), tr.detach())

    ts = torch.tensor([1.0, 0.0], dtype=dt)                    # density direction: t1 -> t0
    tol = dict(method="dopri5", rtol=spec["tol"], atol=spec["tol"])
    const = 0.5 * dim * np.log(2 * np.pi)

    def log_prob_of(zs, ls):
        return -0.5 * (zs[-1] ** 2).sum(1) - const + ls[-1]

    def log_prob():
        with torch.no_grad():
            return log_prob_of(*odeint(dynamics, (x, torch.zeros(n, dtype=dt)), ts, **tol))

    def mean_ll():
        zs, ls = odeint_adjoint(dynamics, (x, torch.zeros(n, dtype=dt)), ts,
                                adjoint_params=tuple(P[k] for k in keys), **tol)
        return log_prob_of(zs, ls).mean()

    def gradient():
        return torch.autograd.grad(mean_ll(), [P[k] for k in keys])

    retained = mean_ll()

    def adjoint():
        return torch.autograd.grad(retained, [P[k] for k in keys], retain_graph=True)

    for k in nfe:
        nfe[k] = 0
    lp = log_prob()
    n_lp = nfe["forward"]
    for k in nfe:
        nfe[k] = 0
    g = gradient()
    counts = {"log_prob": n_lp, "gradient": nfe["forward"] + nfe["adjoint"], "adjoint": nfe["adjoint"]}
    results = {"log_prob": lp.numpy(), "grad": {k: gk.numpy() for k, gk in zip(keys, g)}, "nfe": counts}
    info = [f"torch {torch.__version__} (num_threads={torch.get_num_threads()}), torchdiffeq "
            f"{getattr(torchdiffeq, '__version__', '?')}"]
    return {"log_prob": log_prob, "gradient": gradient, "adjoint": adjoint}, results, info


def _worker(kind, conn, spec):
    """One implementation in its own process: answers ``("run", task)``, ``"noop"``, ``"results"``, ``"stop"``."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
        threadpool_limits(limits=1)                # for the life of this process
        if kind == TD:
            tasks, results, info = _torchdiffeq_tasks(spec)
        else:
            tasks, results, info = _npflows_tasks(spec, kind)
        conn.send(("ready", info + blas_lines(threadpool_info())))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        cmd = conn.recv()
        if cmd == "stop":
            return
        if cmd == "noop":
            conn.send(None)
        elif cmd == "results":
            conn.send(results)
        else:
            t0 = time.perf_counter()
            tasks[cmd[1]]()
            conn.send(time.perf_counter() - t0)


class Remote:
    """A worker process and its end of the pipe."""

    def __init__(self, ctx, kind, spec):
        self.kind = kind
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(kind, child, spec), daemon=True)
        self.proc.start()
        status, self.info = self.conn.recv()
        if status == "error":
            self.proc.join()
            raise RuntimeError(f"{kind} worker failed:\n{self.info}")
        self.inside = {t: [] for t in TASKS}

    def run(self, task):
        self.conn.send(("run", task))
        self.inside[task].append(self.conn.recv())

    def ask(self, cmd):
        self.conn.send(cmd)
        return self.conn.recv()

    def stop(self):
        self.conn.send("stop")
        self.proc.join(timeout=30)


def peers_missing():
    """Why torchdiffeq cannot be measured (None when it can)."""
    def absent(name):
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):            # a parent package missing, or a module set to None
            return True
    missing = [m for m in ("torch", "torchdiffeq") if absent(m)]
    return f"{' and '.join(missing)} not installed; {PEER_INSTALL}" if missing else None


def compare(args, params, x, reps):
    """Part 1: the workers timed in rotation.  Returns ``(median ms by (worker, task), the workers)``."""
    spec = {"params": params, "x": x, "tol": args.tol}
    kinds = [NP, NP_OWN, NP_KEEP]
    why_not = "skipped by --no-peers" if args.no_peers else peers_missing()
    if why_not is None:
        kinds.append(TD)
    else:
        print(f"torchdiffeq: NOT MEASURED, {why_not}")
    ctx = multiprocessing.get_context("spawn")
    remotes = {}
    try:
        for kind in kinds:
            remotes[kind] = Remote(ctx, kind, spec)
            print(f"worker {kind!r} (pid {remotes[kind].proc.pid}) ready:", flush=True)
            for line in remotes[kind].info:
                print(f"  {line.strip()}")
        trip = time_call(lambda: remotes[NP].ask("noop"), min_repeats=50, min_time=0.0, warmup=5)[0]
        print(f"pipe round trip to a worker: {1e3 * trip:.0f} us (median; included in every time below)", flush=True)
        fns = {(kind, task): (lambda r=remotes[kind], t=task: r.run(t))
               for kind in kinds for task in TASKS}
        for _ in range(reps["warmup"]):
            for fn in fns.values():
                fn()
        for r in remotes.values():
            r.inside = {t: [] for t in TASKS}
        timed = time_interleaved(fns, **{**reps, "warmup": 0})
        answers = {kind: remotes[kind].ask("results") for kind in kinds}
    finally:
        for r in remotes.values():
            r.stop()
    ref = answers[NP]
    rows = []
    for kind in kinds:
        a = answers[kind]
        cells = []
        for task in TASKS:
            ms = timed[(kind, task)][0]
            cells += [f"{ms:.1f}", a["nfe"][task]]
        lp_diff = float(np.max(np.abs(a["log_prob"] - ref["log_prob"])))
        g, g0 = (np.concatenate([d[k].ravel() for k in ref["grad"]]) for d in (a["grad"], ref["grad"]))
        g_diff = float(np.linalg.norm(g - g0) / np.linalg.norm(g0))
        same = "" if kind == NP else (" (bit-identical)" if lp_diff == 0 and g_diff == 0 else "")
        rows.append([kind, *cells, f"{lp_diff:.2g}{same}", f"{g_diff:.2g}",
                     "/".join(str(timed[(kind, t)][1]) for t in TASKS)])
    print()
    print(f"median ms per call, one thread, batch {args.batch}, rtol = atol = {args.tol:g}; NFE = evaluations of "
          f"the dynamics (gradient: forward + adjoint solve); diffs against npflows' answers")
    print(fmt_table(["implementation", "log_prob ms", "NFE", "gradient ms", "NFE", "adjoint ms", "adjoint NFE",
                     "log_prob max |diff|", "gradient rel diff", "calls"], rows))
    ms = {k: timed[k][0] for k in timed}
    print("(inside the workers, without the pipe: " + "; ".join(
        f"{kind} " + ", ".join(f"{t} {1e3 * statistics.median(remotes[kind].inside[t]):.1f}" for t in TASKS)
        for kind in kinds) + " ms)")
    return ms, kinds


def by_method(args, params, x, reps):
    """Part 2: every solve_ivp method in this process (nothing set), as a user runs it."""
    rows = []
    w = np.full(args.batch, 1.0 / args.batch)
    for method in args.methods:
        flow = make(args.tol, method)
        pb, pd = flow.split(params)
        b = flow.bijector
        ms_lp, n_lp = time_call(lambda: flow.log_prob(params, x), **reps)
        z, ld, cache = b.forward(pb, x)
        dz, _ = flow.base.log_prob_backward(pd, z, w)
        ms_adj, n_adj = time_call(lambda: b.backward_with_stats(pb, dz, w, cache), **reps)
        _, _, stats = b.backward_with_stats(pb, dz, w, cache)
        rows.append([method, f"{ms_lp:.1f}", cache["nfe"], f"{ms_lp / cache['nfe']:.2f}", f"{ms_adj:.1f}",
                     stats["nfe"], f"{ms_adj / stats['nfe']:.2f}", f"{n_lp}/{n_adj}"])
        print(f"  {method} done", flush=True)
    print()
    print("npflows by solve_ivp method, in this process (nothing set): median ms per call")
    print(fmt_table(["method", "log_prob ms", "NFE", "ms/eval", "adjoint ms", "adjoint NFE", "ms/eval",
                     "calls"], rows))


def main(argv=None):
    use_native_kernel(__file__)
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--batch", help="two-moons points per solve", type=int, default=512)
    ap.add_argument("--tol", type=float, default=1e-5, help="rtol = atol of every solve")
    ap.add_argument("--methods", help="solve_ivp methods to time in part 2 (none: skip it)", nargs="*",
                    default=list(METHODS), choices=list(npflows.bijectors.continuous.METHODS))
    ap.add_argument("--params", help="an .npz written by scripts/demo_cnf.py (default: perturbed initialisation)")
    ap.add_argument("--no-peers", action="store_true", help="skip torchdiffeq (and the torch import)")
    ap.add_argument("--quick", action="store_true", help="2 calls per cell: a smoke run, numbers are noisy")
    args = ap.parse_args(argv)
    announce_quick(args)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        sys.exit("bench_cnf: needs threadpoolctl to pin BLAS to one thread: `pip install threadpoolctl`")

    rng = np.random.default_rng(0)
    flow0 = make(args.tol, "RK45")
    if args.params:
        _, params, config = npflows.load(args.params)
        if tuple(config["bijector"]["hidden"]) != HIDDEN:
            sys.exit(f"bench_cnf: --params must hold a CNF with hidden {HIDDEN}, tanh")
        source = f"trained parameters from {args.params}"
    else:
        params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in flow0.init(rng).items()}
        source = "initialisation + N(0, 0.3^2) on every entry (seed 0)"
    x = npflows.data.two_moons(args.batch, rng)
    quick = dict(min_repeats=2, min_time=0.0, warmup=0)
    reps_cmp = quick if args.quick else dict(min_repeats=11, min_time=0.0, warmup=1)
    reps_method = quick if args.quick else dict(min_repeats=5, min_time=2.0, warmup=1)

    print(f"bench_cnf: CNF D=2, field MLP [z, t] 3 -> 64 -> 64 -> 2 tanh, exact trace, t in [0, 1], "
          f"{sum(v.size for v in params.values())} parameters ({source}); batch {args.batch} two_moons, "
          f"float64, rtol = atol = {args.tol:g}")
    for line in env_lines(np, scipy):
        print(line)
    with threadpool_limits(limits=1):
        print("thread pools of this process while measuring (threadpoolctl, threadpool_limits(1)):")
        for line in blas_lines(threadpool_info()):
            print(line)
        print(f"\n1. npflows against torchdiffeq, one process each, calls timed in rotation: median of >= "
              f"{reps_cmp['min_repeats']} calls after {reps_cmp['warmup']} warm-up call(s)"
              + ("  [--quick]" if args.quick else ""), flush=True)
        ms, kinds = compare(args, params, x, reps_cmp)
        if args.methods:
            print(f"\n2. solve_ivp methods: median of >= {reps_method['min_repeats']} calls and >= "
                  f"{reps_method['min_time']} s per cell, after {reps_method['warmup']} warm-up call(s)", flush=True)
            by_method(args, params, x, reps_method)
    print(f"\nmean log-likelihood of the batch: {float(flow0.log_prob(params, x).mean()):.4f} nats")

    print("\ntargets:")
    missed = 0
    for kind, how in ((NP, "as a user runs it"), (NP_OWN, "NPFLOWS_REUSE_MEMORY=0")):
        for task in ("log_prob", "adjoint"):
            ratio = ms[(kind, task)] / ms[(NP_KEEP, task)]
            ok = ratio <= 1.10
            missed += not ok
            print(f"  npflows {task:<8} ({how}) / with keep_freed_memory(): need <= 1.10, measured {ratio:.2f}: "
                  f"{target_verdict(ok, args.quick)}")
    for task in ("log_prob", "gradient"):
        if TD not in kinds:
            print(f"  torchdiffeq / npflows {task:<8}: need >= 2.0x, NOT MEASURED (torchdiffeq skipped, see above)")
            continue
        ratio = ms[(TD, task)] / ms[(NP, task)]
        ok = ratio >= 2.0
        missed += not ok
        print(f"  torchdiffeq dopri5 / npflows RK45 {task:<8} (one thread): need >= 2.0x, measured {ratio:.2f}x: "
              f"{target_verdict(ok, args.quick)}")
    load = " (load average at end: %.2f %.2f %.2f)" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    print(f"total run time {time.perf_counter() - t_start:.1f} s{load}")
    return exit_status(missed > 0, args.quick)


if __name__ == "__main__":
    sys.exit(main())
