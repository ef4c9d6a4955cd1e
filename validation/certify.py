"""The expected numbers of a case and the accuracy each one can be asked for, from the 50-digit reference.

1. **Expected numbers** (``reference.py``, mpmath at 50 significant digits, written from README.md): the
   forward and inverse outputs and logdets at the case's stored inputs, and every pullback by the complex
   step (one evaluation per scalar input, :math:`\\partial f/\\partial u = \\mathrm{Im} f(u + ih)/h` with
   :math:`h = 2^{-200}|u|` (:math:`2^{-200}` at u = 0), exact to the working precision since nothing is
   subtracted), each correctly rounded to the case's dtype (:func:`round_to`).  npflows' arithmetic plays
   no part: the same inputs give the same bits on every machine and BLAS kernel.
   A conditional case's ``context`` is one more input: the reference reads it (``reference.context``), and
   ``pullback.dcontext`` is its complex-step pullback, one evaluation per context entry, like a parameter's.
2. **Brute force at 50 digits**: each sample's logdet against :math:`\\log|\\det J|` of the reference's own
   complex-step Jacobian; a disagreement beyond 1e-30 stops the generator.

A logdet or pullback reference smaller than 1e-40 times its quantity's magnitude (or 1) is the rounding
residue of an exact zero and is stored as 0 (outputs are not: an input of 1e-300 has outputs that small).

**Attainable digits** (:func:`fill_expected`).  Every number gets an error magnitude ``A``, the absolute
error a backward-stable evaluation makes in units of the unit roundoff:

* forward and inverse outputs: :math:`\\sum_j |\\partial o/\\partial u_j|\\,|u_j|` over every input and
  parameter (the componentwise condition number times :math:`|o|`; the inverse's derivatives from the
  forward Jacobian by the implicit function theorem, inverted at 50 digits);
* logdets: the larger of that and :math:`\\sum_i |t_i|` over the terms :math:`t_i` that README.md sums (per
  coordinate, per layer): the rounding of the terms themselves, about an ulp each, is invisible to the
  condition number with respect to the inputs where they saturate (a log-scale :math:`c\\tanh r` at
  :math:`|r| = 15`) yet cancels to a small sum;
* pullbacks: the larger of the sum of the final contraction's absolute terms,
  :math:`\\sum_i |\\bar y_i J_{ij}|`, and the response of the 50-digit pullback to a random relative
  perturbation of 1e-20 of every input, parameter and cotangent (two draws), which also sees ill-conditioned
  inner steps such as :math:`W^{-T}` of a near-singular W.

The attainable digits are ``-log10(u A / denominator)`` with the checker's denominator; a number with fewer
than ``LOW`` of them is listed in the case's ``tolerance.conditioned`` with the digits the checker requires
of it, ``max(0, min(min_digits, attainable - MARGIN))``.
"""

import mpmath as mp
import numpy as np

from . import reference as R

LOW = {"float64": 13.0, "float32": 6.0}     # attainable digits below which a number is listed as conditioned
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


def _context(case):
    """A conditional case's context ``(N, C)`` as float64, or None."""
    c = case.get("context")
    return None if c is None else np.asarray(c, dtype=np.float64)


def _rows(C, n):
    """Row ``n`` of the context (a batch of one, as the complex step evaluates one sample), or None."""
    return None if C is None else C[n:n + 1]


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
    Cf = _context(case)          # a conditional case: the context, one more input (its pullback: dcontext)
    only_pb = rel is not None
    implicit = only_pb or np.array_equal(yf, np.asarray(case["forward"]["output"], dtype=np.float64))
    with mp.workdps(R.DPS):
        P = {k: _perturbed(v, rng, rel) for k, v in Pf.items()}
        X, Y = _perturbed(xf, rng, rel), _perturbed(yf, rng, rel)
        Cm = None if Cf is None else _perturbed(Cf, rng, rel)
        y, ld = R.forward(T, P, X, Cm)
        xi, ldi = (None, None) if only_pb else R.inverse(T, P, Y, Cm)
        # events of any shape: the Jacobians act on the flattened events (D = the event's size), per sample;
        # the forward output and the inverse input have the output's event shape, x and dx the input's
        N, in_shape, out_shape = xf.shape[0], xf.shape[1:], yf.shape[1:]
        D = int(np.prod(in_shape))
        if int(np.prod(out_shape)) != D:
            raise ValueError(f"{case.get('name')}: the input event {in_shape} and the output event "
                             f"{out_shape} differ in size")
        xf2, yf2 = xf.reshape(N, D), yf.reshape(N, D)
        # Jacobian columns, as float64 (for condition numbers) and as mpf (for the pullbacks)
        Jy_x = np.zeros((N, D, D))        # dy[n, :] / dx[n, d]   (flattened events)
        Jy_mp = [mp.matrix(D, D) for _ in range(N)]
        Jld_x = np.zeros((N, D))
        Jx_y = np.zeros((N, D, D))        # d x_inv[n, :] / d y_in[n, d]
        Jldi_y = np.zeros((N, D))
        pb = case.get("pullback")
        dy = _perturbed(pb["dy"], rng, rel) if pb else None
        dl = _perturbed(pb["dlogdet"], rng, rel) if pb else None
        dy2 = dy.reshape(N, D) if pb else None
        gx = np.empty((N, D), dtype=object)
        gx_abs = np.zeros((N, D))
        for n in range(N):
            for d in range(D):
                row = X[n:n + 1].copy()
                at = (0,) + np.unravel_index(d, in_shape)
                h = _step(row[at])
                row[at] = mp.mpc(row[at], h)
                yc, lc = R.forward(T, P, row, _rows(Cm, n))
                cy = np.array([mp.im(v) / h for v in yc[0].ravel()], dtype=object)
                cl = mp.im(lc[0]) / h
                Jy_x[n, :, d] = [float(v) for v in cy]
                for e in range(D):
                    Jy_mp[n][e, d] = cy[e]
                Jld_x[n, d] = float(cl)
                if pb:
                    terms = list(dy2[n] * cy) + [dl[n] * cl]
                    gx[n, d] = mp.fsum(terms)
                    gx_abs[n, d] = float(mp.fsum(abs(t) for t in terms))
                if implicit:
                    continue
                row = Y[n:n + 1].copy()
                at = (0,) + np.unravel_index(d, out_shape)
                h = _step(row[at])
                row[at] = mp.mpc(row[at], h)
                xc, lc = R.inverse(T, P, row, _rows(Cm, n))
                Jx_y[n, :, d] = [float(mp.im(v) / h) for v in xc[0].ravel()]
                Jldi_y[n, d] = float(mp.im(lc[0]) / h)
        if implicit:                  # x(y) inverts y(x): dx/dy = J^-1, d ldi/dy = -(d ld/dx) J^-1
            # at 50 digits, not by LAPACK: the condition numbers must not depend on the machine's BLAS
            Jinv = np.array([[[float(v) for v in row] for row in (J ** -1).tolist()] for J in Jy_mp])
            Jx_y = Jinv
            Jldi_y = -np.einsum("nd,nde->ne", Jld_x, Jinv)
        # parameters (and the context, key None): forward and inverse columns over the whole batch
        sens = {"y": np.abs(Jy_x * xf2[:, None, :]).sum(-1), "ld": np.abs(Jld_x * xf2).sum(-1),
                "xi": np.abs(Jx_y * yf2[:, None, :]).sum(-1), "ldi": np.abs(Jldi_y * yf2).sum(-1)}
        gp, gp_abs = {}, {}
        for k, v in list(P.items()) + ([(None, Cm)] if Cm is not None else []):
            gp[k] = np.empty(v.shape, dtype=object)
            gp_abs[k] = np.zeros(v.shape)
            for j in np.ndindex(v.shape):
                vc = v.copy()
                h = _step(v[j])
                vc[j] = mp.mpc(v[j], h)
                if k is None:                  # the context's column: dcontext
                    Pc, Cc = P, vc
                else:
                    Pc, Cc = dict(P), Cm
                    Pc[k] = vc
                yc, lc = R.forward(T, Pc, X, Cc)
                cy = np.array([[mp.im(e) / h for e in r.ravel()] for r in yc], dtype=object)   # (N, D)
                cl = np.array([mp.im(e) / h for e in lc], dtype=object)
                u = abs(Pf[k][j] if k is not None else Cf[j])
                cyf, clf = cy.astype(float), cl.astype(float)
                sens["y"] += np.abs(cyf) * u
                sens["ld"] += np.abs(clf) * u
                if implicit:          # x(y, theta): dx/dtheta = -J^-1 dy/dtheta; ldi = -ld(x(y, theta), theta)
                    cxi = -np.einsum("nde,ne->nd", Jinv, cyf)
                    clii = -(clf + np.einsum("nd,nd->n", Jld_x, cxi))
                else:
                    xc, lic = R.inverse(T, Pc, Y, Cc)
                    cxi = np.array([[float(mp.im(e) / h) for e in r.ravel()] for r in xc])
                    clii = np.array([float(mp.im(e) / h) for e in lic])
                sens["xi"] += np.abs(cxi) * u
                sens["ldi"] += np.abs(clii) * u
                if pb:
                    terms = list((dy2 * cy).ravel()) + list(dl * cl)
                    gp[k][j] = mp.fsum(terms)
                    gp_abs[k][j] = float(mp.fsum(abs(t) for t in terms))
        # back to the events' natural shapes: y and the inverse input in the output's, x and dx in the input's
        sens["y"], sens["xi"] = sens["y"].reshape((N,) + out_shape), sens["xi"].reshape((N,) + in_shape)
        gx, gx_abs = gx.reshape((N,) + in_shape), gx_abs.reshape((N,) + in_shape)

    def cond(val, s):
        a = np.abs(val.astype(float))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, s / a, np.inf)

    def logdet_entry(val, s, magnitudes):
        kappa_sum = cond(val, np.abs(magnitudes.astype(float)))
        return val, np.maximum(cond(val, s), kappa_sum), s, kappa_sum

    with mp.workdps(R.DPS), R.summand_magnitudes():       # sum |term| of each logdet, at the real inputs
        ld_mag = R.forward(T, P, X, Cm)[1]
        ldi_mag = None if only_pb else R.inverse(T, P, Y, Cm)[1]
    if not only_pb:       # brute force at 50 digits: the logdet formula against the map's own Jacobian
        with mp.workdps(R.DPS):
            def stated(J):             # log|det J|, or a stochastic logdet's estimator applied to J
                r = R.logdet_from_jacobian(T, J)
                return mp.log(abs(mp.det(J))) if r is None else r
            gap = max((abs(stated(J) - ld[n]) / max(1, abs(ld[n])) for n, J in enumerate(Jy_mp)), default=mp.mpf(0))
        if gap > mp.mpf(10) ** -30:
            raise ValueError(f"{case.get('name')}: the reference's logdet differs from log|det| of its own "
                             f"complex-step Jacobian by {mp.nstr(gap, 3)} (relative): the formulas disagree")
    out = {"forward.output": (y, cond(y, sens["y"]), sens["y"]),
           "forward.logdet": logdet_entry(ld, sens["ld"], ld_mag)}
    if not only_pb:
        out["inverse.output"] = (xi, cond(xi, sens["xi"]), sens["xi"])
        out["inverse.logdet"] = logdet_entry(ldi, sens["ldi"], ldi_mag)
    if pb:
        out["pullback.dx"] = (gx, cond(gx, gx_abs), gx_abs)
        for k in P:
            out[f"pullback.dparams[{k}]"] = (gp[k], cond(gp[k], gp_abs[k]), gp_abs[k])
        if Cm is not None:
            out["pullback.dcontext"] = (gp[None], cond(gp[None], gp_abs[None]), gp_abs[None])
    return out


ZERO = mp.mpf(10) ** -(R.DPS - 10)     # a reference this small next to its quantity is an exact zero
PERTURB = mp.mpf(10) ** -20           # relative perturbation for the pullbacks' condition numbers
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24}
MARGIN = 2.0          # digits an evaluation may lose beyond its conditioning: a factor 100 of rounding steps
REFERENCE = f"mpmath, {R.DPS} significant digits; pullbacks by the complex step"


def _zeroed(ref, scale):
    """The reference with rounding residues of exact zeros (|r| < 1e-40 max(1, scale)) set to 0."""
    scale = max(1.0, scale)
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
            r0, r1 = refs[name], pert[name][0]
            k = np.zeros(r0.shape)
            for i in np.ndindex(r0.shape):
                k[i] = float(abs(r1[i] - r0[i]) / (abs(r0[i]) * PERTURB)) if r0[i] != 0 else 0.0
            out[name] = np.maximum(out.get(name, 0.0), k)
    return out


def round_to(ref, dtype):
    """The 50-digit values ``ref`` (object array of mpf) correctly rounded to ``dtype``, as float64 values
    (a float32 value is stored as the double it converts to exactly).  Rounding a 50-digit value can differ
    from rounding the exact value only when the exact value lies within 1e-48 (relative) of a midpoint
    between two representable numbers."""
    out = np.empty(ref.shape)
    for i in np.ndindex(ref.shape):
        v = mp.mpf(ref[i])
        if dtype == "float32" and v != 0 and abs(v) >= mp.mpf(2) ** -126:
            with mp.workprec(24):             # round to nearest, 24 significant bits
                v = +v
            out[i] = float(v)
        elif dtype == "float32":              # float32 subnormals and zero
            out[i] = float(np.float32(float(v)))
        else:
            out[i] = float(v)
    return out


def _rounded_list(a):
    from .format import to_json_array
    return to_json_array(a)


def fill_expected(case):
    """Fill ``case``'s expected numbers with its 50-digit reference correctly rounded to the case's dtype,
    and return ``(certification, conditioned)``.

    ``case`` holds the inputs: ``transform``, ``dtype``, ``params``, ``forward.input``, the cotangents
    ``pullback.dy`` and ``pullback.dlogdet``, and ``inverse.input`` (``None``: the forward output, i.e. the
    rounded forward reference).  Nothing here depends on npflows' arithmetic or the machine's BLAS, so the
    numbers are identical wherever they are generated.

    ``conditioned`` lists every number whose attainable accuracy is below ``LOW`` digits (13 in float64, 6
    in float32, where the checker's requirement of 4 digits would leave less than ``MARGIN``), as the checker
    measures agreement: an evaluation in the case's dtype with unit roundoff
    ``u`` errs by about ``u * A``, where ``A`` is the number's error magnitude (the sum over every input,
    parameter and cotangent of ``|d number / d input| * |input|``; for a logdet at least the sum of its
    terms' magnitudes, for a pullback at least the sum of its final contraction's absolute terms and the
    response to a 1e-20 relative perturbation of everything).  The attainable digits are
    ``-log10(u A / denominator)`` with the checker's denominator, and the checker requires
    ``min(min_digits, attainable - MARGIN)`` of them (at least 0)."""
    from .check import denominators
    T, dtype = case["transform"], case["dtype"]
    P = {k: R.mpf_array(np.asarray(v, dtype=np.float64)) for k, v in case["params"].items()}
    Cm = None if case.get("context") is None else R.mpf_array(_context(case))
    with mp.workdps(R.DPS):
        y, _ = R.forward(T, P, R.mpf_array(np.asarray(case["forward"]["input"], dtype=np.float64)), Cm)
    case["forward"]["output"] = _rounded_list(round_to(y, dtype))
    if case["inverse"]["input"] is None:
        case["inverse"]["input"] = case["forward"]["output"]
    refs = reference_values(case)
    pb = case.get("pullback")
    # exact zeros: a logdet or pullback this small next to its quantity is the residue of an exact 0
    vals = {}
    for name, r in refs.items():
        v = r[0]
        if not name.endswith("output"):
            big = max((abs(float(e)) for e in v.ravel()), default=0.0)
            v = _zeroed(v, big)
        vals[name] = v
    rounded = {name: round_to(v, dtype) for name, v in vals.items()}
    case["forward"]["output"] = _rounded_list(rounded["forward.output"])
    case["forward"]["logdet"] = _rounded_list(rounded["forward.logdet"])
    case["inverse"]["output"] = _rounded_list(rounded["inverse.output"])
    case["inverse"]["logdet"] = _rounded_list(rounded["inverse.logdet"])
    if pb:
        pb["dx"] = _rounded_list(rounded["pullback.dx"])
        if "pullback.dcontext" in rounded:
            pb["dcontext"] = _rounded_list(rounded["pullback.dcontext"])
        pb["dparams"] = {k: _rounded_list(rounded[f"pullback.dparams[{k}]"]) for k in case["params"]}
    # error magnitudes A per number
    A = {}
    for name, r in refs.items():
        a = np.abs(np.vectorize(float, otypes=[float])(vals[name])) if vals[name].size else np.zeros(0)
        mag = np.asarray(r[2], dtype=float)
        if len(r) > 3:                                    # a logdet: the terms' rounding
            ks = np.where(np.isfinite(r[3]), r[3], 0.0)
            mag = np.maximum(mag, ks * a)
        A[name] = np.maximum(mag, a)
    pbn = [n for n in refs if n.startswith("pullback")]
    if pbn:
        extra = _pullback_conditions(case, vals, pbn)
        for name in pbn:
            a = np.abs(np.vectorize(float, otypes=[float])(vals[name]))
            A[name] = np.maximum(A[name], extra[name] * a)
    term_scale = {name: float(f"{float(np.max(refs[name][2])):.3g}") if refs[name][2].size else 0.0
                  for name in refs if name.startswith("pullback")}
    cert = {"reference": REFERENCE,
            "expected": f"the reference correctly rounded to {dtype}",
            "term_scale": term_scale}
    dens = denominators(case, term_scale)
    u = UNIT_ROUNDOFF[dtype]
    md = case["tolerance"]["min_digits"]
    conditioned = []
    from .format import quantities
    for name, stored in quantities(case):
        e = np.asarray(stored, dtype=np.float64)
        den = dens[name]
        with np.errstate(divide="ignore"):
            att = np.where(A[name] > 0, -np.log10(u * A[name] / den), np.inf)
        for i in zip(*np.nonzero(att < max(LOW[dtype], md + MARGIN))):
            i = tuple(int(j) for j in i)
            a_i = round(max(float(att[i]), 0.0), 1)
            cond = float(A[name][i] / abs(e[i])) if e[i] != 0 else None
            conditioned.append({"quantity": name, "index": list(i),
                                "condition": float(f"{cond:.3g}") if cond is not None else None,
                                "attainable_digits": a_i,
                                "min_digits": round(max(0.0, min(md, a_i - MARGIN)), 1)})
    return cert, conditioned


def certify_case(case):
    """Fill a case's expected numbers and return its ``certification`` (see README.md): for a transform
    with a 50-digit reference, the reference correctly rounded (:func:`fill_expected`; the tolerance's
    ``conditioned`` list is set on the case); for an ODE solve, npflows' numbers stay and are certified
    against a tight solve (``certify_ode.py``)."""
    from .certify_ode import certify_solver, is_solver_certified, no_reference_note
    from .format import inputs_hash, numbers_hash
    if is_solver_certified(case["transform"]):     # an ODE solve: no 50-digit reference (certify_ode.py)
        cert = {"inputs_sha256": inputs_hash(case), "reference": None,
                "no_reference": no_reference_note(case["transform"])}
        cert.update(certify_solver(case))
        cert["numbers_sha256"] = numbers_hash(case)
        return cert
    missing = sorted(R.missing_types(case["transform"]))
    if missing:
        raise ValueError(f"{case['name']}: no 50-digit reference for {', '.join(missing)} in "
                         f"validation/reference.py")
    h = inputs_hash(case)
    cert, conditioned = fill_expected(case)
    if conditioned:
        case["tolerance"]["conditioned"] = conditioned
    else:
        case["tolerance"].pop("conditioned", None)
    out = {"inputs_sha256": h, "numbers_sha256": numbers_hash(case)}
    out.update(cert)
    return out
