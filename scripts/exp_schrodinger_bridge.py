"""Experiment: the Schrödinger bridge between eight Gaussians and two-moons, beside a CNF's transport.

An aside to the continuous normalizing flow (``scripts/demo_cnf.py``).  Two clouds of ``--n`` points each,
x0 from eight Gaussians (``npflows.data.eight_gaussians``) and x1 from two-moons (noise 0.1), weights 1/n:

1. **Entropic OT.**  The plan P_eps between the clouds for the cost |x - y|^2 / 2 by log-domain Sinkhorn
   (``npflows.transport.sinkhorn_log``; Cuturi 2013, arXiv:1306.0895; Peyré & Cuturi 2019, arXiv:1803.00567),
   for eps = 1, 0.3, 0.1, 0.03, 0.01, each started from the potentials of the previous one (eps-scaling), to
   the stopping tolerance ``--tol`` on the L1 error of the row sums.  Per eps: iterations, time, the L1
   errors of both marginals of the returned plan, the transport cost <P, C>, and how close the plan is to the
   exact optimal assignment (``scipy.optimize.linear_sum_assignment``, the eps -> 0 limit for equal clouds):
   the cost's excess over the OT cost, the RMS distance between the plan's barycentric map
   sum_j P_ij y_j / sum_j P_ij and the assignment, and the mass the plan puts on the assignment.
2. **The bridge.**  Pairs drawn from P_eps (``--draws`` per source point), each joined by a Brownian bridge
   X_t = (1 - t) x0 + t x1 + sqrt(eps t (1 - t)) W with diffusion eps (``npflows.transport.brownian_bridge``,
   whose docstring derives why this is the Schrödinger bridge for Brownian motion of diffusion eps when the
   plan is the entropic one for |x - y|^2 / 2 at that same eps).  The marginals of the sampled paths at t = 0
   and t = 1 are checked numerically: the L1 distance of the endpoint frequencies from the uniform weights,
   next to the level that sampling noise alone gives for an exact plan (sum_j E|c_j - E c_j| / M with c_j the
   count of draws of point j, from the plan's own row probabilities, normal approximation).
3. **A CNF's transport.**  ``CNF(2, (64, 64), "tanh")`` whose base (t0 = 0) is the exact eight-Gaussian mixture
   (not a standard normal) and whose data (t1 = 1) is two-moons: its ODE is a deterministic transport between
   the two distributions, trained between them directly.  It is trained by conditional flow matching
   (Lipman et al. 2022, arXiv:2210.02747; Liu et al. 2022, arXiv:2209.03003; see ``train_flow_matching``):
   a regression of the field on the velocities of straight lines between independent pairs, with the field's
   hand-derived VJP, and no ODE solve during training.  That is the cheap and honest choice here: maximum
   likelihood (``--cnf-train mle``, demo_cnf's training) between these two clouds took 13 minutes (3.9 min of
   CPU) for 1500 steps and reached a test log-likelihood of -1.79 nats (exact -1.02), its pushforward of the
   source cloud far from the moons (matching cost 0.63): an ODE from eight separated blobs has to stretch the
   near-empty gaps between them over the connected arcs, which maximum likelihood fights for a long time
   (experiment 1's disconnected-support problem, from the other side); composing the two CNFs of demo_cnf
   through a Gaussian would cost two such trainings.  The transport map T is the CNF's inverse (t0 -> t1); its
   mean cost |x0 - T(x0)|^2 / 2 is compared with the OT cost from x0 to the very points T(x0) (the cheapest way
   to the same endpoints), and T(x0) with the target cloud by the cost of their best matching.

Writes into ``--out`` (default ``out/``) ``schrodinger_bridge.png``: bridge paths for eps = 1, 0.1, 0.01, the
optimal assignment's straight lines, the CNF's trajectories, and the plan's distance to the OT map against eps.
Every random draw comes from ``numpy.random.default_rng([seed, purpose])``; one BLAS thread.

Measured (the defaults: 500 points per cloud, tol 1e-6, 20 paths per point; a 2-core machine shared with other
jobs, load 8-12: 4.7 min in all, of which 43 s of CPU; Sinkhorn 102 s, the CNF's training 117 s):

    ====  =====  ======  =======  =======  ======  ======  =========  ==========  ======  =====  ===========
    eps   iter   time s  row L1   col L1   <P, C>  excess  RMS to OT  on OT perm  t=1 L1  noise  mid spread
    ====  =====  ======  =======  =======  ======  ======  =========  ==========  ======  =====  ===========
    1     20     1.3     5.7e-07  5.7e-16  1.4769  64.6%   0.403      0.006       0.181   0.178  0.496 (0.5)
    0.3   57     2.7     9.0e-07  6.2e-16  1.0736  19.7%   0.267      0.012       0.181   0.178  0.273 (0.274)
    0.1   169    9.8     9.6e-07  7.6e-16  0.9566  6.6%    0.193      0.023       0.168   0.177  0.158 (0.158)
    0.03  496    25.5    9.8e-07  1.7e-15  0.9178  2.3%    0.112      0.056       0.169   0.175  0.087 (0.087)
    0.01  1206   62.7    1.0e-06  5.1e-15  0.9041  0.8%    0.073      0.125       0.168   0.171  0.050 (0.050)
    ====  =====  ======  =======  =======  ======  ======  =========  ==========  ======  =====  ===========

Exact OT (linear_sum_assignment): cost 0.8971.  Row/col L1: the marginal errors of the returned plan (the rows
are solved to tol, the columns exactly); t=0 L1 is 0 for every eps (each source point is drawn 20 times), and
every path starts exactly at its x0 and ends at its x1; t=1 L1: the endpoint frequencies against the weights,
at the sampling-noise level beside it.  Mid spread: the RMS per coordinate of X_1/2 around the pair's
midpoint, against sqrt(eps/4) in brackets.  CNF (flow matching, 3000 steps): transport cost 0.9416 against
0.8923 for the OT map to the same points T(x0) (+5.5%), T(x0) matches the target cloud at cost 0.0140 (a
transport onto the moons), test log-likelihood -1.412 nats (exact density -1.004).

Lesson: the Schrödinger bridge is entropic OT plus Brownian noise of the same eps; as eps -> 0 its cost
(+64.6% -> +0.8%) and barycentric map (RMS 0.40 -> 0.07) converge to the optimal assignment and the paths
straighten into the OT map's lines, while a trained CNF moves the same clouds deterministically along curved
paths that cost 5.5% more than the optimal map to the same endpoints.

    python scripts/exp_schrodinger_bridge.py              # the full run (several minutes)
    python scripts/exp_schrodinger_bridge.py --quick      # a smoke run (seconds)
"""
import argparse
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_util import fmt_table  # noqa: E402
from _cli import HelpFormatter, announce_quick  # noqa: E402
import npflows as nf  # noqa: E402
from npflows.distributions import Distribution  # noqa: E402
from npflows.transport import barycentric_map, brownian_bridge, half_sq_cost, sample_plan, sinkhorn_log  # noqa: E402
from npflows.plotting import save_small  # noqa: E402

SOURCE, TARGET, PAIRS, NOISE, CNF_TRAIN, CNF_TEST, CNF_INIT, MINIBATCH, PATHS = range(9)
EPS = (1.0, 0.3, 0.1, 0.03, 0.01)
PLOTTED_EPS = (1.0, 0.1, 0.01)


class EightGaussians(Distribution):
    """The mixture of :func:`npflows.data.eight_gaussians` (8 isotropic normals of standard deviation s = 0.2 at
    radius 2, equal weights) as a base distribution, so a flow can start from it.

    Notes
    -----
    :math:`\\log p(z) = \\log\\sum_k \\tfrac18\\,\\mathcal N(z; \\mu_k, s^2 I)`; with the responsibilities
    :math:`r_k(z) = \\mathrm{softmax}_k(-|z - \\mu_k|^2 / 2s^2)`,
    :math:`\\nabla_z\\log p = \\sum_k r_k(z)(\\mu_k - z)/s^2`, so the pullback of a cotangent ``w`` is
    ``w[:, None] * sum_k r_k (mu_k - z) / s^2``.  Sampling draws a component and adds the noise."""

    def __init__(self, radius=2.0, std=0.2):
        self._set_shape(2)
        k = np.arange(8)
        self.mu = radius * np.stack([np.cos(k * np.pi / 4), np.sin(k * np.pi / 4)], axis=1)
        self.std = std

    def _logits(self, z, xp=np):
        d2 = xp.sum((z[:, None, :] - self.mu[None]) ** 2, axis=2)
        return -0.5 * d2 / self.std ** 2

    def _log_prob(self, params, z, xp):
        return logsumexp(self._logits(z), axis=1) - np.log(8.0) - np.log(2 * np.pi * self.std ** 2)

    def _log_prob_backward(self, params, z, dlogp):
        lg = self._logits(z)
        r = np.exp(lg - logsumexp(lg, axis=1, keepdims=True))
        grad = (r @ self.mu - z) / self.std ** 2
        return dlogp[:, None] * grad, {}

    def _rsample(self, params, n, rng, dtype, xp, temperature=1.0):
        k = rng.integers(0, 8, n)
        return (self.mu[k] + self.std * rng.standard_normal((n, 2))).astype(dtype), None


def noise_level(log_plan, draws):
    """Expected L1 distance of the endpoint frequencies from their means for an exact plan: independent draws,
    ``draws`` per source row, each from the row's conditional; per target the count's variance is
    ``draws * sum_i p_ij (1 - p_ij)``, and E|c - E c| = sqrt(2 Var / pi) (normal approximation)."""
    p = np.exp(log_plan - logsumexp(log_plan, axis=1, keepdims=True))
    var = draws * np.sum(p * (1 - p), axis=0)
    return float(np.sum(np.sqrt(2 * var / np.pi)) / (draws * p.shape[0]))


def sinkhorn_table(x0, x1, eps_list, tol, max_iter, perm, rng, draws, times):
    n = x0.shape[0]
    C = half_sq_cost(x0, x1)
    a = np.full(n, 1.0 / n)
    ot_cost = float(C[np.arange(n), perm].mean())
    rows, plans, init = [], {}, None
    for eps in eps_list:
        t0 = time.perf_counter()
        lp, f, g, it, (err_a, err_b) = sinkhorn_log(a, a.copy(), C, eps, tol=tol, max_iter=max_iter, init=init)
        secs = time.perf_counter() - t0
        init = (f, g)
        P = np.exp(lp)
        cost = float(np.sum(P * C))
        rms = float(np.sqrt(np.mean(np.sum((barycentric_map(lp, x1) - x1[perm]) ** 2, axis=1))))
        on_perm = float(P[np.arange(n), perm].sum())
        # sampled bridges: draws per source point; endpoint frequencies at t = 0 and t = 1
        src = np.repeat(np.arange(n), draws)
        dst = sample_plan(lp, src, rng)
        paths = brownian_bridge(x0[src], x1[dst], eps, times, rng)
        f0 = np.bincount(src, minlength=n) / src.size
        f1 = np.bincount(dst, minlength=n) / dst.size
        ends_ok = bool(np.array_equal(paths[0], x0[src]) and np.allclose(paths[-1], x1[dst], rtol=0, atol=1e-12))
        mid = paths[times.size // 2]
        rows.append(dict(eps=eps, iters=it, secs=secs, err_a=err_a, err_b=err_b, cost=cost, excess=cost / ot_cost - 1,
                         rms=rms, on_perm=on_perm, f0=float(np.abs(f0 - a).sum()), f1=float(np.abs(f1 - a).sum()),
                         noise=noise_level(lp, draws), ends_ok=ends_ok,
                         mid_spread=float(np.sqrt(np.mean((mid - 0.5 * (x0[src] + x1[dst])) ** 2)))))
        plans[eps] = (lp, paths, src, dst)
        r = rows[-1]
        print(f"  eps {eps:<5g} {it:>5} iterations {secs:6.1f} s  marginal L1 errors {err_a:.1e} {err_b:.1e}  "
              f"<P, C> {cost:.4f} (OT {ot_cost:.4f}, +{100 * r['excess']:.2f}%)  RMS to the OT map {rms:.3f}  "
              f"sampled t=1 L1 {r['f1']:.3f} (noise {r['noise']:.3f})", flush=True)
    return rows, plans, ot_cost


def train_flow_matching(cnf, params, steps, batch, lr, rng, strata=8, log_every=None):
    """Conditional flow matching between the two distributions (Lipman, Chen, Ben-Hamu, Nickel & Le 2022,
    arXiv:2210.02747; Liu, Gong & Liu 2022, "rectified flow", arXiv:2209.03003): fit the CNF's field
    :math:`v(x, t)` by least squares to the velocity :math:`x_1 - x_0` of the straight line
    :math:`x_t = (1 - t)x_0 + t x_1` between independent draws :math:`x_0` (eight Gaussians), :math:`x_1`
    (two-moons), :math:`t \\sim U(0, 1)`.

    The minimiser is :math:`v^*(x, t) = \\mathbb E[x_1 - x_0 \\mid x_t = x]`, and the law of :math:`x_t`
    solves the continuity equation with :math:`v^*` (Liu et al. 2022, theorem 3.3), so the ODE
    :math:`dz/dt = v^*(z, t)` carries the source law at t = 0 to the target law at t = 1: a deterministic
    transport (not the optimal one: the pairs are independent, not the OT plan's).  No ODE is solved during
    training.  The loss :math:`L = \\frac1B\\sum_n |v(x_{t_n}, t_n) - (x_{1n} - x_{0n})|^2` has the gradient
    :math:`\\sum_n a_n^T\\,\\partial v(x_{t_n}, t_n)/\\partial\\theta` with :math:`a_n = \\frac2B(v_n - u_n)`:
    one vector-Jacobian product of the field (``ODEField.vjp`` with no trace term, its hand-derived backward).
    The field takes one time per call, so the batch is cut into ``strata`` groups, group k at
    :math:`t_k = (k + U_k)/K`: a stratified draw of U(0, 1), every sample's t still uniform."""
    field = cnf.field
    state = nf.adam_init(params)
    per = max(1, batch // strata)
    hist, run, t0 = [], 0.0, time.perf_counter()
    for step in range(steps):
        grads, loss = None, 0.0
        for k in range(strata):
            t = (k + rng.random()) / strata
            x0, x1 = nf.data.eight_gaussians(per, rng), nf.data.two_moons(per, rng)
            xt, u = (1 - t) * x0 + t * x1, x1 - x0
            r = field.forward(params, xt, t) - u
            loss += float(np.sum(r * r)) / (strata * per)
            g = field.vjp(params, xt, t, (2.0 / (strata * per)) * r)[2]
            grads = g if grads is None else {key: grads[key] + g[key] for key in grads}
        lr_t = 0.5 * lr * (1.0 + np.cos(np.pi * step / steps))
        params, state = nf.adam(params, grads, state, lr=lr_t, clip_norm=10.0)
        run += loss
        if log_every and ((step + 1) % log_every == 0 or step == steps - 1):
            n = log_every if (step + 1) % log_every == 0 else (step + 1) % log_every
            print(f"step {step + 1:>5}/{steps}  flow-matching loss {run / n:.4f}  "
                  f"{n / (time.perf_counter() - t0):6.1f} steps/s", flush=True)
            hist.append(run / n)
            run, t0 = 0.0, time.perf_counter()
    return params


def train_cnf(args, rng):
    hidden = tuple(args.cnf_hidden)
    cnf = nf.CNF(2, hidden=hidden, activation="tanh", rtol=args.cnf_tol, atol=args.cnf_tol)
    flow = nf.NormalizingFlow(cnf, EightGaussians())
    params = flow.init(rng(CNF_INIT))
    how = ("conditional flow matching (independent pairs, no ODE solved in training)" if args.cnf_train == "fm"
           else "maximum likelihood (the adjoint method, as demo_cnf)")
    print(f"\nCNF: MLP 3-{'-'.join(map(str, hidden))}-2 tanh, base = the eight-Gaussian mixture, trained by {how}: "
          f"{args.cnf_steps} Adam steps at batch {args.cnf_batch}, lr {args.cnf_lr:g} cosine; RK45 rtol = atol = "
          f"{args.cnf_tol:g}", flush=True)
    t0 = time.perf_counter()
    log_every = max(1, args.cnf_steps // 10)
    if args.cnf_train == "fm":
        params = train_flow_matching(cnf, params, args.cnf_steps, args.cnf_batch, args.cnf_lr, rng(MINIBATCH),
                                     log_every=log_every)
    else:
        from demo_cnf import train
        x_train = nf.data.two_moons(20_000, rng(CNF_TRAIN))
        params = train(flow, params, x_train, args.cnf_steps, args.cnf_batch, args.cnf_lr, rng(MINIBATCH), log_every)[0]
    return flow, params, time.perf_counter() - t0


def plot(path, x0, x1, perm, plans, rows, cnf_paths, cnf_cost, ot_cost, rng, n_paths, cnf_label="flow matching"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 7.0))
    show = rng.choice(x0.shape[0], size=min(n_paths, x0.shape[0]), replace=False)

    def clouds(ax):
        ax.scatter(x0[:, 0], x0[:, 1], s=3, c="tab:blue", alpha=0.35, lw=0)
        ax.scatter(x1[:, 0], x1[:, 1], s=3, c="tab:red", alpha=0.35, lw=0)
        ax.set_aspect("equal")
        ax.set_xlim(-3.0, 3.0)
        ax.set_ylim(-3.0, 3.0)
        ax.set_xticks([])
        ax.set_yticks([])

    by_eps = {r["eps"]: r for r in rows}
    for ax, eps in zip(axes[0], PLOTTED_EPS):
        clouds(ax)
        if eps in plans:
            lp, paths, src, dst = plans[eps]
            first = np.searchsorted(src, show)          # the first draw of each shown source point
            for i in first:
                ax.plot(paths[:, i, 0], paths[:, i, 1], lw=0.6, c="0.15", alpha=0.7)
            ax.set_title(f"Schrödinger bridge, eps = {eps:g}\n<P, C> = {by_eps[eps]['cost']:.3f} (OT {ot_cost:.3f})",
                         fontsize=8)
    ax = axes[1, 0]
    clouds(ax)
    for i in show:
        ax.plot([x0[i, 0], x1[perm[i], 0]], [x0[i, 1], x1[perm[i], 1]], lw=0.6, c="0.15", alpha=0.7)
    ax.set_title(f"optimal assignment (eps -> 0), cost {ot_cost:.3f}", fontsize=8)
    ax = axes[1, 1]
    clouds(ax)
    if cnf_paths is not None:
        for i in range(cnf_paths.shape[1]):
            ax.plot(cnf_paths[:, i, 0], cnf_paths[:, i, 1], lw=0.6, c="0.15", alpha=0.7)
        ax.set_title(f"CNF ({cnf_label}), deterministic\nmean |x0 - T(x0)|^2/2 = {cnf_cost:.3f}", fontsize=8)
    else:
        ax.set_title("CNF skipped (--cnf-steps 0)", fontsize=8)
    ax = axes[1, 2]
    e = [r["eps"] for r in rows]
    ax.loglog(e, [r["rms"] for r in rows], "o-", label="RMS |barycentric map - OT map|")
    ax.loglog(e, [max(r["excess"], 1e-6) for r in rows], "s-", label="<P, C> / OT cost - 1")
    ax.set_xlabel("eps")
    ax.set_title("the entropic plan approaches the OT map", fontsize=8)
    ax.legend(fontsize=7)
    fig.text(0.01, 0.005, "blue: eight Gaussians (t = 0); red: two-moons (t = 1)", fontsize=7)
    fig.tight_layout()
    save_small(fig, path, 80)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--n", type=int, default=500, help="points per cloud")
    p.add_argument("--eps", type=float, nargs="+", default=list(EPS), help="regularisations, solved in this order "
                   "(each from the previous one's potentials)")
    p.add_argument("--tol", type=float, default=1e-6, help="Sinkhorn's tolerance on the row sums' L1 error")
    p.add_argument("--max-iter", type=int, default=20_000, help="Sinkhorn's iteration budget per eps")
    p.add_argument("--draws", type=int, default=20, help="bridge paths drawn per source point")
    p.add_argument("--cnf-train", default="fm", choices=["fm", "mle"],
                   help="how the CNF is trained: conditional flow matching, or maximum likelihood (slow, see above)")
    p.add_argument("--cnf-steps", type=int, default=3000, help="Adam steps of the CNF (0: skip the CNF)")
    p.add_argument("--cnf-hidden", type=int, nargs="+", default=[64, 64], help="hidden widths of the CNF's field")
    p.add_argument("--cnf-batch", type=int, default=256, help="CNF training batch")
    p.add_argument("--cnf-lr", type=float, default=5e-3, help="CNF peak learning rate (cosine schedule)")
    p.add_argument("--cnf-tol", type=float, default=1e-4, help="rtol = atol of the CNF's solves")
    p.add_argument("--paths", type=int, default=60, help="paths drawn per panel")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--quick", action="store_true", help="60 points, eps 1 0.1, 10 CNF steps: a smoke test")
    p.add_argument("--out", default="out", help="directory for the PNG")
    p.add_argument("--no-plots", action="store_true", help="skip the plot even if matplotlib is installed")
    args = p.parse_args(argv)
    announce_quick(args)
    if args.quick:
        args.n, args.eps, args.cnf_steps, args.cnf_hidden, args.draws = 60, [1.0, 0.1], 10, [8, 8], 5
    t_start = time.perf_counter()
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in load0) if load0 else 'n/a'}")
    rng = lambda purpose: np.random.default_rng([args.seed, purpose])      # noqa: E731
    x0 = nf.data.eight_gaussians(args.n, rng(SOURCE))
    x1 = nf.data.two_moons(args.n, rng(TARGET))
    C = half_sq_cost(x0, x1)
    rows_idx, perm = linear_sum_assignment(C)
    assert np.array_equal(rows_idx, np.arange(args.n))
    times = np.linspace(0.0, 1.0, 41)
    print(f"\n{args.n} points per cloud: eight Gaussians (t = 0) -> two-moons (t = 1), cost |x - y|^2 / 2; exact OT "
          f"(linear_sum_assignment) cost {C[rows_idx, perm].mean():.4f}", flush=True)
    t_sk = time.perf_counter()
    rows, plans, ot_cost = sinkhorn_table(x0, x1, args.eps, args.tol, args.max_iter, perm, rng(PAIRS), args.draws,
                                          times)
    t_sk = time.perf_counter() - t_sk

    cnf_paths, cnf_cost, cnf = None, None, None
    if args.cnf_steps > 0:
        flow, params, secs = train_cnf(args, rng)
        pb, _ = flow.split(params)
        T, _ = flow.bijector.inverse(pb, x0)                # base (t0) -> data (t1): the CNF's transport map
        cnf_cost = float(np.mean(np.sum((T - x0) ** 2, axis=1)) / 2)
        x_test = nf.data.two_moons(300 if args.quick else 5000, rng(CNF_TEST))
        test_ll = float(flow.log_prob(params, x_test).mean())
        limit = float(nf.data.two_moons_log_density(x_test).mean())
        show = rng(PATHS).choice(args.n, size=min(args.paths, args.n), replace=False)
        cnf_paths = flow.bijector.trajectory(pb, x0[show], times)
        # how good a transport is T?  (i) its pushforward of the source cloud against the target cloud: the cost of
        # the best matching between T(x0) and x1 (two samples of the same law match at a small cost); (ii) how far
        # from optimal: T's cost against the OT cost between x0 and the very points T(x0) it reaches, the cheapest
        # way to the same endpoints (the OT cost to the sample x1 is not comparable: a finite sample's OT cost
        # exceeds the population's)
        match = half_sq_cost(T, x1)
        r_, c_ = linear_sum_assignment(match)
        own = half_sq_cost(x0, T)
        r2, c2 = linear_sum_assignment(own)
        cnf = dict(secs=secs, cost=cnf_cost, test_ll=test_ll, limit=limit, match=float(match[r_, c_].mean()),
                   ot_own=float(own[r2, c2].mean()), how=args.cnf_train)
        print(f"CNF: trained in {secs:.0f} s; test LL {test_ll:.4f} nats (exact density {limit:.4f}); transport cost "
              f"mean |x0 - T(x0)|^2/2 = {cnf_cost:.4f}, OT cost from x0 to the points T(x0) {cnf['ot_own']:.4f}; "
              f"matching cost between T(x0) and x1 {cnf['match']:.4f}", flush=True)

    print(f"\nSinkhorn per eps ({args.n} x {args.n}, tol {args.tol:g} on the row sums' L1 error; marginal errors are "
          f"the L1 errors of the returned plan's row and column sums; sampled: {args.draws} bridge paths per source "
          f"point, endpoint frequencies at t = 0 and 1 against the weights, next to the sampling-noise level)")
    print(fmt_table(["eps", "iter", "s", "row L1", "col L1", "<P, C>", "excess", "RMS to OT", "on OT perm",
                     "t=0 L1", "t=1 L1", "noise", "ends exact", "mid spread"],
                    [[f"{r['eps']:g}", r["iters"], f"{r['secs']:.1f}", f"{r['err_a']:.1e}", f"{r['err_b']:.1e}",
                      f"{r['cost']:.4f}", f"{100 * r['excess']:.2f}%", f"{r['rms']:.3f}", f"{r['on_perm']:.3f}",
                      f"{r['f0']:.3f}", f"{r['f1']:.3f}", f"{r['noise']:.3f}", "yes" if r["ends_ok"] else "NO",
                      f"{r['mid_spread']:.3f}"] for r in rows]))
    print("(mid spread: the RMS per coordinate of X_1/2 around the pair's midpoint; a Brownian bridge of diffusion "
          "eps has sqrt(eps/4) there)")
    print(f"exact OT (linear_sum_assignment): cost {ot_cost:.4f}")
    if cnf:
        label = "flow matching" if cnf["how"] == "fm" else "max. likelihood"
        print(f"CNF ({label}, deterministic): transport cost {cnf['cost']:.4f}, against {cnf['ot_own']:.4f} for the OT "
              f"map from x0 to the same points T(x0) (+{100 * (cnf['cost'] / cnf['ot_own'] - 1):.1f}%); matching cost "
              f"T(x0) to x1 {cnf['match']:.4f} (a transport onto the target: small); test LL {cnf['test_ll']:.4f} "
              f"(exact {cnf['limit']:.4f}); trained in {cnf['secs']:.0f} s")

    if not args.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib is not installed: skipping the plot (pip install 'npflows[plot]')")
        else:
            os.makedirs(args.out, exist_ok=True)
            path = os.path.join(args.out, "schrodinger_bridge.png")
            plot(path, x0, x1, perm, plans, rows, cnf_paths, cnf_cost, ot_cost, rng(PATHS), args.paths,
                 "flow matching" if args.cnf_train == "fm" else "max. likelihood")
            print(f"wrote {path}")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"total time {time.perf_counter() - t_start:.1f} s (Sinkhorn and bridges {t_sk:.1f} s); load average at "
          f"end {load}")
    return rows, cnf


if __name__ == "__main__":
    main()
