"""Certification of a case, independent of the code that produced its numbers.

1. **50 digits** (``reference.py``, mpmath at 50 significant digits, written from README.md): the forward
   and inverse outputs and logdets at the case's stored inputs, and every pullback by the complex step
   (one evaluation per scalar input, :math:`\\partial f/\\partial u = \\mathrm{Im} f(u + ih)/h` with
   :math:`h = 2^{-200}|u|` (:math:`2^{-200}` at u = 0), exact to the working precision since nothing is subtracted).  Each stored float64
   number gets its certified digits, NIST StRD's log relative error against the 50-digit value.
2. **Brute force in float64** (autograd on npflows' traceable ``forward``): each sample's logdet against
   ``slogdet`` of its full Jacobian, and the pullback against autograd's gradient.  These catch a wrong
   formula even where no 50-digit reference exists; they certify no digits.

A logdet or pullback reference smaller than 1e-40 times its quantity's magnitude (or 1) is the rounding
residue of an exact zero and is taken as 0 (outputs are not: an input of 1e-300 has outputs that small);
the digits of a stored value ``v`` against an exact 0 are ``-log10|v|`` (NIST).

A number with fewer than ``LOW`` certified digits (13 for float64, 5 for float32) is listed with its
50-digit value, a condition number and the reason:

* forward and inverse outputs: the componentwise condition number
  :math:`\\kappa = \\sum_j |\\partial o/\\partial u_j|\\,|u_j| / |o|` over every input and parameter
  (the complex step gives the whole Jacobian): any float64 evaluation loses about
  :math:`\\log_{10}\\kappa` digits;
* logdets: the larger of that and the summation condition number
  :math:`\\sum_i |t_i| / |\\sum_i t_i|` of the terms :math:`t_i` that README.md sums (per coordinate, per
  layer): the rounding of the terms themselves, about an ulp each, is invisible to the condition number
  with respect to the inputs where they saturate (a log-scale :math:`c\\tanh r` at :math:`|r| = 15`) yet
  cancels to a small sum;
* pullbacks: the larger of the cancellation ratio of the final contraction,
  :math:`\\sum_i |\\bar y_i J_{ij}| / |\\sum_i \\bar y_i J_{ij}|`, and (where that does not explain the
  loss) the response of the 50-digit pullback to a random relative perturbation of 1e-20 of every input,
  parameter and cotangent (two draws), which also sees ill-conditioned inner steps such as
  :math:`W^{-T}` of a near-singular W;
* a number that loses more than its condition number explains (with a margin of 1.5 digits) is
  flagged ``npflows`` in the reason: an accuracy limit of npflows' formula, recorded as a finding.
"""
import math

import mpmath as mp
import numpy as np

from . import reference as R
from .format import MAX_DIGITS, lre, numbers_hash, quantities

LOW = {"float64": 13.0, "float32": 5.0}
EPS_DIGITS = {"float64": -math.log10(2.0 ** -53), "float32": -math.log10(2.0 ** -24)}
MAX_SCALARS = 4000        # inputs + parameters above which the 50-digit reference is skipped (too slow)
H = mp.mpf(2) ** -200


def _step(u):
    """The complex step for input ``u``: ``2^-200 |u|`` (relative, so that inputs like 1e-300 work), or
    ``2^-200`` at ``u = 0``."""
    return H * abs(u) if u != 0 else H


def _arrays(case):
    P = {k: np.asarray(v, dtype=np.float64) for k, v in case["params"].items()}
    x = np.asarray(case["forward"]["input"], dtype=np.float64)
    y = np.asarray(case["inverse"]["input"], dtype=np.float64)
    return P, x, y


# --------------------------------------------------------------------------- 50-digit reference


def _perturbed(a, rng, rel):
    """An mpf copy of ``a`` with every entry multiplied by ``1 + rel * (+-1)`` (random signs)."""
    out = R.mpf_array(a)
    if rel:
        sign = rng.choice([-1, 1], size=np.shape(a))
        for i in np.ndindex(out.shape):
            out[i] = out[i] * (1 + rel * int(sign[i]))
    return out


def reference_values(case, rel=None, rng=None):
    """The 50-digit values of every quantity of ``case`` and the condition numbers, as
    ``{quantity name: (object array of mpf, float array of condition numbers, float array of the magnitude
    of the contributions sum_j |do/du_j| |u_j|)}``; a logdet's condition number is the larger of that and
    its summation condition number, which is appended as a fourth element.  With ``rel``, every
    input, parameter and cotangent is first perturbed by the relative amount ``rel`` (random signs), and
    only the pullbacks are computed.

    Where the inverse's input is the forward output (every case but explicit variants), the inverse's
    sensitivities come from the forward Jacobian by the implicit function theorem,
    :math:`\\partial x/\\partial y = J^{-1}`, :math:`\\partial x/\\partial\\theta = -J^{-1}\\partial y/\\partial\\theta`
    (in float64, at the forward input, which the inverse reproduces): no complex-step inverse is needed,
    which matters for sequential (autoregressive) and numerical (planar) inverses."""
    T = case["transform"]
    Pf, xf, yf = _arrays(case)
    only_pb = rel is not None
    implicit = only_pb or np.array_equal(yf, np.asarray(case["forward"]["output"], dtype=np.float64))
    with mp.workdps(R.DPS):
        P = {k: _perturbed(v, rng, rel) for k, v in Pf.items()}
        X, Y = _perturbed(xf, rng, rel), _perturbed(yf, rng, rel)
        y, ld = R.forward(T, P, X)
        xi, ldi = (None, None) if only_pb else R.inverse(T, P, Y)
        N, D = xf.shape
        # Jacobian columns, as float64 (for condition numbers) and as mpf (for the pullbacks)
        Jy_x = np.zeros((N, D, D))        # dy[n, :] / dx[n, d]
        Jld_x = np.zeros((N, D))
        Jx_y = np.zeros((N, D, D))        # d x_inv[n, :] / d y_in[n, d]
        Jldi_y = np.zeros((N, D))
        pb = case.get("pullback")
        dy = _perturbed(pb["dy"], rng, rel) if pb else None
        dl = _perturbed(pb["dlogdet"], rng, rel) if pb else None
        gx = np.empty((N, D), dtype=object)
        gx_abs = np.zeros((N, D))
        for n in range(N):
            for d in range(D):
                row = X[n:n + 1].copy()
                h = _step(row[0, d])
                row[0, d] = mp.mpc(row[0, d], h)
                yc, lc = R.forward(T, P, row)
                cy = np.array([mp.im(v) / h for v in yc[0]], dtype=object)
                cl = mp.im(lc[0]) / h
                Jy_x[n, :, d] = [float(v) for v in cy]
                Jld_x[n, d] = float(cl)
                if pb:
                    terms = list(dy[n] * cy) + [dl[n] * cl]
                    gx[n, d] = mp.fsum(terms)
                    gx_abs[n, d] = float(mp.fsum(abs(t) for t in terms))
                if implicit:
                    continue
                row = Y[n:n + 1].copy()
                h = _step(row[0, d])
                row[0, d] = mp.mpc(row[0, d], h)
                xc, lc = R.inverse(T, P, row)
                Jx_y[n, :, d] = [float(mp.im(v) / h) for v in xc[0]]
                Jldi_y[n, d] = float(mp.im(lc[0]) / h)
        if implicit:                  # x(y) inverts y(x): dx/dy = J^-1, d ldi/dy = -(d ld/dx) J^-1
            Jinv = np.array([np.linalg.pinv(J) for J in Jy_x])
            Jx_y = Jinv
            Jldi_y = -np.einsum("nd,nde->ne", Jld_x, Jinv)
        # parameters: forward and inverse columns over the whole batch
        sens = {"y": np.abs(Jy_x * xf[:, None, :]).sum(-1), "ld": np.abs(Jld_x * xf).sum(-1),
                "xi": np.abs(Jx_y * yf[:, None, :]).sum(-1), "ldi": np.abs(Jldi_y * yf).sum(-1)}
        gp, gp_abs = {}, {}
        for k, v in P.items():
            gp[k] = np.empty(v.shape, dtype=object)
            gp_abs[k] = np.zeros(v.shape)
            for j in np.ndindex(v.shape):
                Pc = dict(P)
                Pc[k] = v.copy()
                h = _step(v[j])
                Pc[k][j] = mp.mpc(v[j], h)
                yc, lc = R.forward(T, Pc, X)
                cy = np.array([[mp.im(e) / h for e in r] for r in yc], dtype=object)
                cl = np.array([mp.im(e) / h for e in lc], dtype=object)
                u = abs(Pf[k][j])
                cyf, clf = cy.astype(float), cl.astype(float)
                sens["y"] += np.abs(cyf) * u
                sens["ld"] += np.abs(clf) * u
                if implicit:          # x(y, theta): dx/dtheta = -J^-1 dy/dtheta; ldi = -ld(x(y, theta), theta)
                    cxi = -np.einsum("nde,ne->nd", Jinv, cyf)
                    clii = -(clf + np.einsum("nd,nd->n", Jld_x, cxi))
                else:
                    xc, lic = R.inverse(T, Pc, Y)
                    cxi = np.array([[float(mp.im(e) / h) for e in r] for r in xc])
                    clii = np.array([float(mp.im(e) / h) for e in lic])
                sens["xi"] += np.abs(cxi) * u
                sens["ldi"] += np.abs(clii) * u
                if pb:
                    terms = list((dy * cy).ravel()) + list(dl * cl)
                    gp[k][j] = mp.fsum(terms)
                    gp_abs[k][j] = float(mp.fsum(abs(t) for t in terms))

    def cond(val, s):
        a = np.abs(val.astype(float))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, s / a, np.inf)

    def logdet_entry(val, s, magnitudes):
        kappa_sum = cond(val, np.abs(magnitudes.astype(float)))
        return val, np.maximum(cond(val, s), kappa_sum), s, kappa_sum

    with mp.workdps(R.DPS), R.summand_magnitudes():       # sum |term| of each logdet, at the real inputs
        ld_mag = R.forward(T, P, X)[1]
        ldi_mag = None if only_pb else R.inverse(T, P, Y)[1]
    out = {"forward.output": (y, cond(y, sens["y"]), sens["y"]),
           "forward.logdet": logdet_entry(ld, sens["ld"], ld_mag)}
    if not only_pb:
        out["inverse.output"] = (xi, cond(xi, sens["xi"]), sens["xi"])
        out["inverse.logdet"] = logdet_entry(ldi, sens["ldi"], ldi_mag)
    if pb:
        out["pullback.dx"] = (gx, cond(gx, gx_abs), gx_abs)
        for k in P:
            out[f"pullback.dparams[{k}]"] = (gp[k], cond(gp[k], gp_abs[k]), gp_abs[k])
    return out


def _reason(quantity, dtype, digits, kappa, value, ref, kappa_sum=None):
    expected = EPS_DIGITS[dtype] - math.log10(max(kappa, 1.0)) if math.isfinite(kappa) else 0.0
    what = "condition number"
    if kappa_sum is not None and math.isfinite(kappa_sum) and kappa_sum >= kappa > 1.0:
        what = "summation condition number sum|term|/|sum| (the logdet's terms cancel)"
    if ref == 0:
        return "the exact value is 0; the stored number is rounding residue", "conditioning"
    if digits + 1.5 >= expected:
        if dtype == "float32" and kappa < 10:
            return f"float32 arithmetic (eps 6e-8); {what} {kappa:.2g}", "conditioning"
        return (f"{what} {kappa:.2g}: any {dtype} evaluation loses about {math.log10(max(kappa, 1)):.1f} "
                f"digits here", "conditioning")
    return (f"npflows loses {expected - digits:.1f} digits more than the condition number ({kappa:.2g}) "
            f"explains: an accuracy limit of npflows' formula", "npflows")


ZERO = mp.mpf(10) ** -(R.DPS - 10)     # a reference this small next to its quantity is an exact zero
PERTURB = mp.mpf(10) ** -20           # relative perturbation for the pullbacks' condition numbers


def _zeroed(ref, val):
    """The reference with rounding residues of exact zeros (|r| < 1e-40 max(1, |quantity|)) set to 0."""
    scale = max(1.0, float(np.max(np.abs(val))) if val.size else 1.0)
    out = ref.copy()
    for i in np.ndindex(ref.shape):
        if abs(ref[i]) < ZERO * scale:
            out[i] = mp.mpf(0)
    return out


def _pullback_conditions(case, refs, names):
    """Condition numbers of the pullback quantities ``names`` estimated by perturbing every input,
    parameter and cotangent by a relative 1e-20 (two draws of random signs; the larger response)."""
    out = {}
    for seed in (1, 2):
        pert = reference_values(case, rel=PERTURB, rng=np.random.default_rng(seed))
        for name in names:
            r0, r1 = refs[name][0], pert[name][0]
            k = np.zeros(r0.shape)
            for i in np.ndindex(r0.shape):
                k[i] = float(abs(r1[i] - r0[i]) / (abs(r0[i]) * PERTURB)) if r0[i] != 0 else np.inf
            out[name] = np.maximum(out.get(name, 0.0), k)
    return out


def certify_50_digits(case):
    dtype = case["dtype"]
    refs = reference_values(case)
    qs = [(name, np.asarray(stored, dtype=np.float64)) for name, stored in quantities(case)]
    terms = {name: float(np.max(refs[name][2])) if refs[name][2].size else 0.0 for name, _ in qs}
    kappa_sum = {name: refs[name][3] for name, _ in qs if len(refs[name]) > 3}
    refs = {name: (refs[name][0] if name.endswith("output") else _zeroed(refs[name][0], val), refs[name][1])
            for name, val in qs}
    lres = {name: lre(val, refs[name][0]) for name, val in qs}
    low_pb = [name for name, _ in qs if name.startswith("pullback") and (lres[name] < LOW[dtype]).any()]
    if low_pb:          # the final sum's cancellation ratio misses ill-conditioned inner steps
        extra = _pullback_conditions(case, refs, low_pb)
        for name in low_pb:
            refs[name] = (refs[name][0], np.maximum(refs[name][1], extra[name]))
    digits, low, n, n_ok = {}, [], 0, 0
    for name, val in qs:
        ref, kappa = refs[name]
        d = lres[name]
        digits[name] = float(d.min()) if d.size else MAX_DIGITS
        n += d.size
        n_ok += int((d >= 13.0).sum())
        for i in zip(*np.nonzero(d < LOW[dtype])):
            i = tuple(int(j) for j in i)
            ks = float(kappa_sum[name][i]) if name in kappa_sum else None
            reason, kind = _reason(name, dtype, float(d[i]), float(kappa[i]), float(val[i]), ref[i], ks)
            low.append({"quantity": name, "index": list(i), "digits": round(float(d[i]), 2),
                        "value": float(val[i]), "reference": mp.nstr(ref[i], 25),
                        "condition": float(f"{kappa[i]:.3g}") if math.isfinite(kappa[i]) else None,
                        "reason": reason, "kind": kind})
    return {"digits": {k: round(v, 2) for k, v in digits.items()},
            "term_scale": {k: float(f"{v:.3g}") for k, v in terms.items()},
            "min_digits": round(min(digits.values()), 2), "n_numbers": n, "n_ge_13": n_ok, "low": low}


# --------------------------------------------------------------------------- float64 brute force


def certify_autograd(case):
    """Agreement (digits, relative to the largest magnitude compared) of the stored logdet with slogdet
    of the brute-force Jacobian, and of the stored pullback with autograd's gradient."""
    import autograd
    import autograd.numpy as anp

    from .describe import build
    b = build(case["transform"])
    Pf, x, _ = _arrays(case)
    N, D = x.shape

    def digits(a, ref):
        a, ref = np.asarray(a, float), np.asarray(ref, float)
        err = float(np.max(np.abs(a - ref))) if a.size else 0.0
        scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1.0)    # as the harness
        return MAX_DIGITS if err == 0 else round(float(min(MAX_DIGITS, -math.log10(err / scale))), 2)

    out = {}
    try:
        f = lambda flat: anp.reshape(b.forward(Pf, anp.reshape(flat, (N, D)), xp=anp)[0], (-1,))
        J = autograd.jacobian(f)(x.reshape(-1)).reshape(N, D, N, D)
        brute = np.array([np.linalg.slogdet(J[i, :, i, :])[1] for i in range(N)])
        out["logdet_vs_slogdet_digits"] = digits(case["forward"]["logdet"], brute)
        pb = case.get("pullback")
        if pb:
            dy, dl = np.asarray(pb["dy"]), np.asarray(pb["dlogdet"])

            def obj(args):
                y, ld, _ = b.forward(args[1], args[0], xp=anp)
                return anp.sum(dy * y) + anp.sum(dl * ld)
            gx, gp = autograd.grad(obj)((x, Pf))
            d = [digits(pb["dx"], gx)] + [digits(pb["dparams"][k], gp[k]) for k in Pf]
            out["pullback_vs_autograd_digits"] = min(d)
    except Exception as e:      # a transform that autograd cannot trace: say so
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def certify_case(case):
    """The ``certification`` object of a case (see README.md)."""
    cert = {"numbers_sha256": numbers_hash(case)}
    from .certify_ode import SOLVER_CERTIFIED, certify_solver, is_solver_certified
    if is_solver_certified(case["transform"]):     # an ODE solve: no 50-digit reference (certify_ode.py)
        cert["reference"] = None
        cert["no_reference"] = SOLVER_CERTIFIED[case["transform"]["type"]]
        cert.update(certify_solver(case))
        return cert
    if case["dtype"] == "float64":
        cert["autograd"] = certify_autograd(case)
    missing = sorted(R.missing_types(case["transform"]))
    n_scalars = np.size(case["forward"]["input"]) + sum(np.size(v) for v in case["params"].values())
    if missing:
        cert["reference"] = None
        cert["no_reference"] = f"no 50-digit reference for {', '.join(missing)} in validation/reference.py"
    elif n_scalars > MAX_SCALARS:
        cert["reference"] = None
        cert["no_reference"] = f"{n_scalars} scalar inputs: too large for the 50-digit reference"
    else:
        cert["reference"] = f"mpmath {mp.__version__}, {R.DPS} digits, complex-step pullbacks"
        cert.update(certify_50_digits(case))
    return cert
