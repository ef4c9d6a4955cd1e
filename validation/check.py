"""The checker: run an adapter on every case and compare, number by number.

Every expected number ``e`` of a case with a 50-digit reference is that reference correctly rounded to the
case's dtype (an ODE solve's are npflows' solve, certified against a tight one).  The checker compares the
adapter's value ``a`` with it in digits of agreement::

    digits = -log10(|a - e| / max(|e|, floor * S))        (15 when equal, clipped to [0, 15])

with ``S`` the quantity's largest magnitude (for a pullback at least its ``term_scale``, the largest sum of
absolute terms of one of its numbers, from the certification, or the case's largest pullback scale where
the whole quantity is zero up to rounding) and ``floor`` the case's tolerance floor: numbers that are tiny
next to their neighbours, or sums that cancel to nearly nothing, are judged relative to the quantity, not
to themselves.  For a logdet the denominator is at least 1: the absolute error of a log is the relative
error of the determinant.  A number passes with ``digits >= required``: the case's ``min_digits`` (10 for
float64, 4 for float32), except for the numbers its tolerance lists as ``conditioned``, whose attainable
accuracy in the case's dtype is lower (``certify.fill_expected`` derives it from the 50-digit condition
numbers, not from any implementation's result) and which state their own ``min_digits``.

Every quantity must be answered: computed, or declared :class:`~validation.adapters.Unavailable` with a
reason.  A quantity left out fails the case, so a case cannot be passed by half an answer.
"""
import importlib
import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .format import MAX_DIGITS, quantities


def digits_of_agreement(a, e, den):
    """``-log10(|a - e| / den)`` elementwise, 15 where equal, 0 for NaN, clipped to [0, 15]."""
    a = np.asarray(a, dtype=np.float64)
    err = np.abs(a - e)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = -np.log10(err / den)
    d = np.where(err == 0, MAX_DIGITS, d)
    d = np.where(np.isnan(a) | np.isnan(d), 0.0, d)
    return np.clip(d, 0.0, MAX_DIGITS)


@dataclass
class Result:
    name: str
    status: str                       # "pass", "FAIL", "differs" (one-sided pullback only), "skip", "error"
    worst: float = float("nan")       # worst digits of agreement over every compared number
    first: str = ""                   # first disagreeing quantity, or the reason for skip / error
    compared: int = 0
    not_computed: list = field(default_factory=list)    # neither computed nor declared: a failure
    declared: dict = field(default_factory=dict)         # quantity -> the adapter's reason it cannot
    coverage: dict = field(default_factory=dict)         # quantity -> "computed" | "declared" | "missing"
    per_quantity: dict = field(default_factory=dict)    # quantity -> (worst digits, number failing)


def _alias_package():
    """Let an adapter file written against the repository (``from validation.adapters import arrays``) run
    against the installed package (``npflows_validation``) too."""
    import sys
    pkg = __package__
    if pkg != "validation" and "validation" not in sys.modules:
        sys.modules["validation"] = importlib.import_module(pkg)
        sys.modules["validation.adapters"] = importlib.import_module(f"{pkg}.adapters")


def load_adapter(spec):
    """An adapter by short name (``npflows`` -> ``<this package>.adapters.npflows_adapter``), module name, or
    path to a ``.py`` file."""
    _alias_package()
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec).resolve()
        s = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(s)
        s.loader.exec_module(mod)
        return mod
    try:
        return importlib.import_module(f"{__package__}.adapters.{spec}_adapter")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.adapters.{spec}_adapter":
            raise
        return importlib.import_module(spec)


def denominators(case, term_scale=None):
    """``{quantity: array}``: the denominator of every number's digits of agreement,
    ``max(|e|, floor * S, abs_floor)`` (see the module docstring), from the case's expected values ``e``.
    ``term_scale`` defaults to the certification's."""
    floor = case["tolerance"]["floor"]
    if term_scale is None:
        term_scale = (case.get("certification") or {}).get("term_scale", {})
    qs = [(name, np.asarray(v, dtype=np.float64)) for name, v in quantities(case)]
    pb_scale = {name: max(float(np.max(np.abs(e))) if e.size else 0.0, term_scale.get(name, 0.0))
                for name, e in qs if name.startswith("pullback")}
    case_pb = max(pb_scale.values(), default=0.0)
    out = {}
    for name, e in qs:
        # a pullback is a sum, judged on the size of its terms (on the case's gradients where the whole
        # quantity is zero up to rounding); a logdet is a log, whose absolute error is the relative error
        # of the determinant, so its denominator is never below 1
        S = float(np.max(np.abs(e))) if e.size else 0.0
        if name.startswith("pullback"):
            S = max(S, pb_scale[name] if pb_scale[name] >= 1e-30 * case_pb else case_pb)
        abs_floor = 1.0 if "logdet" in name else 0.0
        out[name] = np.maximum(np.maximum(np.abs(e), floor * S), abs_floor)
    return out


def required_digits(case):
    """``{quantity: array}``: the digits each number must reach, ``min_digits`` except where the case's
    tolerance lists it as ``conditioned`` (its attainable accuracy in the case's dtype is lower)."""
    md = case["tolerance"]["min_digits"]
    out = {name: np.full(np.shape(v), md, dtype=float) for name, v in quantities(case)}
    for item in case["tolerance"].get("conditioned", []):
        out[item["quantity"]][tuple(item["index"])] = item["min_digits"]
    return out


def _declared(got, name):
    """The :class:`~validation.adapters.Unavailable` that covers quantity ``name`` (itself, or a group
    ``"inverse"``, ``"pullback"``, ``"pullback.dparams"`` above it), or None."""
    from .adapters import Unavailable
    for key in (name, name.split("[")[0], name.split(".")[0]):
        v = got.get(key)
        if isinstance(v, Unavailable):
            return v
    return None


def compare(case, got):
    """A :class:`Result` for the adapter's output ``got`` (``{quantity: array | Unavailable}``) on
    ``case``.  A quantity that is neither computed nor declared unavailable fails the case."""
    dens = denominators(case)
    req = required_digits(case)
    qs = quantities(case)
    res = Result(case["name"], "pass", worst=15.0)
    for name, stored in qs:
        decl = _declared(got, name)
        if decl is not None:
            res.declared[name] = decl.reason
            res.coverage[name] = "declared"
            continue
        if got.get(name) is None:
            res.not_computed.append(name)
            res.coverage[name] = "missing"
            continue
        res.coverage[name] = "computed"
        e = np.asarray(stored, dtype=np.float64)
        a = np.asarray(got[name], dtype=np.float64)
        if a.shape != e.shape:
            res.status = "FAIL"
            res.first = res.first or f"{name}: shape {a.shape}, expected {e.shape}"
            res.worst = 0.0
            continue
        required = req[name]
        d = digits_of_agreement(a, e, dens[name])
        res.compared += d.size
        if d.size:
            res.worst = min(res.worst, float(d.min()))
        bad = np.argwhere(d < required)
        if bad.size and not res.first:
            i = tuple(int(j) for j in bad[0])
            res.first = (f"{name}{list(i)}: got {float(a[i])!r}, expected {float(e[i])!r} ({d[i]:.1f} "
                         f"digits < {required[i]:.1f} required)")
        res.per_quantity[name] = (float(d.min()) if d.size else 15.0, int(len(bad)))
        if bad.size:
            res.status = "FAIL"
    if res.not_computed:
        res.status = "FAIL"
        res.first = res.first or f"not computed and not declared unavailable: {', '.join(res.not_computed)}"
    elif res.compared == 0:
        res.status, res.first = "skip", "the adapter declared every quantity unavailable"
    elif res.status == "FAIL" and case.get("one_sided") and all(
            q.startswith("pullback") for q, (_, nbad) in res.per_quantity.items() if nbad):
        res.status = "differs"           # only the one-sided derivatives at knots disagree: a convention
        res.first = "one-sided pullback (convention at knots, see the case's one_sided): " + res.first
    return res


def context_gate(adapter, case):
    """The reason to skip a conditional case (one with a ``context``) for an adapter that does not state
    ``TAKES_CONTEXT = True``, else None: an adapter written before contexts existed would run the
    unconditional map and report a false failure."""
    if case.get("context") is not None and not getattr(adapter, "TAKES_CONTEXT", False):
        return "a conditional case (context): this adapter does not pass a context"
    return None


def check(adapter, cases, out=print, verbose=False):
    """Run ``adapter`` on ``cases``; print one line per case and a summary; return the results.
    ``verbose``: also every compared quantity's worst digits and count of failing numbers."""
    import warnings
    results = []
    t0 = time.perf_counter()
    width = max([len(c["name"]) for c in cases] + [4])
    out(f"{'case':<{width}}  status  digits  first disagreement")
    for case in cases:
        reason = context_gate(adapter, case) or adapter.supports(case)
        if reason:
            r = Result(case["name"], "skip", first=reason)
        else:
            try:
                with warnings.catch_warnings():          # a peer's deprecation chatter is not a finding
                    warnings.simplefilter("ignore")
                    got = adapter.run(case)
            except Exception as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                if type(e).__name__ == "NotMappable":         # the adapter found out only while running
                    r = Result(case["name"], "skip", first=msg)
                else:
                    r = Result(case["name"], "error", worst=0.0, first=f"{type(e).__name__}: {msg}")
            else:
                r = compare(case, got)
        results.append(r)
        worst = "" if r.status in ("skip",) else f"{max(r.worst, 0.0) + 0.0:5.1f}"
        note = r.first
        if r.declared and r.status != "skip":
            note = (note + "; " if note else "") + f"declared unavailable: {_group_names(r.declared)}"
        out(f"{r.name:<{width}}  {r.status:<6}  {worst:>6}  {note}")
        if verbose and r.per_quantity:
            for q, (d, nbad) in r.per_quantity.items():
                out(f"{'':<{width}}          {d:5.1f}  {q}" + (f": {nbad} below required" if nbad else ""))
            for q, why in r.declared.items():
                out(f"{'':<{width}}              -  {q}: declared unavailable ({why})")
    dt = time.perf_counter() - t0
    n = {s: sum(r.status == s for r in results) for s in ("pass", "FAIL", "differs", "error", "skip")}
    ran = [r for r in results if r.status in ("pass", "FAIL", "differs")]
    worst = min((r.worst for r in ran), default=float("nan"))
    out(f"summary: {getattr(adapter, 'NAME', None) or getattr(adapter, '__name__', 'adapter')}: {len(results)} cases, {n['pass']} pass, "
        f"{n['FAIL']} fail, {n['differs']} differ by convention only, {n['error']} error, {n['skip']} skipped; "
        f"worst agreement {max(worst, 0.0) + 0.0:.1f} digits; "
        f"{dt:.1f} s")
    for line in coverage_lines(results):
        out(line)
    return results


GROUPS = [("forward outputs", lambda q: q == "forward.output"),
          ("inverse outputs", lambda q: q == "inverse.output"),
          ("logdets", lambda q: q.endswith(".logdet")),
          ("input pullbacks", lambda q: q == "pullback.dx"),
          ("context pullbacks", lambda q: q == "pullback.dcontext"),
          ("parameter pullbacks", lambda q: q.startswith("pullback.dparams"))]


def _group_names(declared):
    names = []
    for g, test in GROUPS:
        if any(test(q) for q in declared):
            names.append(g)
    return ", ".join(names)


def coverage_lines(results):
    """The coverage summary: per quantity group, over the cases the adapter ran (pass, fail or differs),
    how many quantities it computed, declared unavailable, or left missing (failures)."""
    ran = [r for r in results if r.coverage]
    lines = [f"coverage over the {len(ran)} cases run (quantities computed / declared unavailable / missing):"]
    for g, test in GROUPS:
        c = {k: sum(1 for r in ran for q, v in r.coverage.items() if test(q) and v == k)
             for k in ("computed", "declared", "missing")}
        total = sum(c.values())
        pct = 100.0 * c["computed"] / total if total else 0.0
        lines.append(f"  {g:<20} {c['computed']:5d} / {c['declared']:4d} / {c['missing']:4d}   "
                     f"({pct:5.1f}% computed)")
    return lines
