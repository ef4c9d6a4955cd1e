"""The report (``python -m validation report``): what the golden cases hold, and how accurately npflows
reproduces them.

Two parts, kept apart on purpose:

* **the cases** (machine-independent, read from the files): how many numbers, how many are the 50-digit
  reference correctly rounded, which are ill-conditioned (the tolerance's ``conditioned`` list, with their
  attainable digits in the case's dtype);
* **npflows' agreement** (measured now, on this machine): npflows is run through its adapter like any other
  implementation, and each of its numbers gets its digits of agreement with the stored reference in the
  checker's metric (``-log10(|v - e| / max(|e|, floor * S))``, capped at 15; see ``check.py``), the metric
  in which the cases state each number's attainable digits.  A float64 number below 13 digits is
  explained by ``conditioning`` when the case lists it as conditioned and npflows reaches its attainable
  digits less 1.5; ``accumulation`` when it is not listed (its attainable digits are 13 or more) and npflows
  is within 1.5 digits of 13 (rounding accumulated over a long computation); else it is marked ``npflows``:
  more is lost than the conditioning explains, an accuracy limit of npflows' formula, a finding.  These figures can move in the last
  digit from one BLAS kernel to another; the cases cannot.
"""
from collections import Counter, defaultdict

import numpy as np

from .certify_ode import is_solver_certified
from .variants import VARIANTS

LOW = {"float64": 13.0, "float32": 5.0}


def types_of(T):
    from .reference import children
    out = {T["type"]}
    for L in children(T):
        out |= types_of(L)
    return out


def _count(case):
    from .format import quantities
    return sum(int(np.size(v)) for _, v in quantities(case))


def case_summary(cases):
    """Machine-independent counts: ``{"cases", "float64", "float32", "numbers64", "referenced64",
    "conditioned64", "solver64"}``."""
    out = Counter(cases=len(cases))
    for c in cases:
        out[c["dtype"]] += 1
        if c["dtype"] != "float64":
            continue
        n = _count(c)
        out["numbers64"] += n
        if is_solver_certified(c["transform"]):
            out["solver64"] += n
        else:
            out["referenced64"] += n
            out["conditioned64"] += sum(1 for i in c["tolerance"].get("conditioned", [])
                                        if i["attainable_digits"] < LOW["float64"])
    return dict(out)


def summary_text(cases):
    """The README's summary paragraph of the cases (machine-independent)."""
    s = case_summary(cases)
    return (f"{s['cases']} cases ({s.get('float64', 0)} float64, {s.get('float32', 0)} float32).  Of the "
            f"{s['numbers64']} stored float64 numbers, {s['referenced64']} are the 50-digit reference "
            f"correctly rounded and {s['solver64']} (the `CNF` cases) are ODE solves certified against a "
            f"tight solve; {s['conditioned64']} of the former are ill-conditioned, with fewer than 13 "
            f"attainable digits in float64, and state their own requirement.")


def npflows_agreement(cases):
    """Run npflows on ``cases``: ``{case name: {quantity: (digits array, attainable array)}}`` for every
    case with a 50-digit reference."""
    from .adapters import npflows_adapter
    from .check import denominators, digits_of_agreement
    from .format import quantities
    out = {}
    for c in cases:
        if is_solver_certified(c["transform"]):
            continue
        got = npflows_adapter.run(c)
        att = {name: np.full(np.shape(v), np.inf) for name, v in quantities(c)}
        for i in c["tolerance"].get("conditioned", []):
            att[i["quantity"]][tuple(i["index"])] = i["attainable_digits"]
        dens = denominators(c)
        out[c["name"]] = {name: (digits_of_agreement(got[name], np.asarray(v, dtype=np.float64), dens[name]),
                                 att[name]) for name, v in quantities(c)}
    return out


def kind_of(digits, attainable):
    """Why a float64 number has fewer than 13 digits: ``conditioning``, ``accumulation`` or ``npflows``
    (see the module docstring); ``attainable`` is ``inf`` for a number the case does not list."""
    if attainable < LOW["float64"]:
        return "conditioning" if digits >= attainable - 1.5 else "npflows"
    return "accumulation" if digits >= LOW["float64"] - 1.5 else "npflows"


def report(cases, full=False):
    from .format import CASES_DIR, read_file
    L = [summary_text(cases), ""]
    gaps = [(p.stem, g) for p in sorted(CASES_DIR.glob("*.json")) for g in read_file(p).get("not_generated", [])]
    agreement = npflows_agreement(cases)
    by_dtype = {"float64": [0, 0], "float32": [0, 0]}
    lows = defaultdict(list)
    kinds = Counter()
    f32_worst = 15.0
    for c in cases:
        if c["name"] not in agreement:
            continue
        dt = c["dtype"]
        for name, (d, att) in agreement[c["name"]].items():
            by_dtype[dt][0] += d.size
            by_dtype[dt][1] += int((d >= LOW[dt]).sum())
            if dt == "float32" and d.size:
                f32_worst = min(f32_worst, float(d.min()))
            if dt != "float64":
                continue
            for i in zip(*np.nonzero(d < LOW[dt])):
                kind = kind_of(float(d[i]), float(att[i]))
                kinds[kind] += 1
                lows[c["name"]].append((name, [int(j) for j in i], float(d[i]), float(att[i]), kind))
    n64, ok64 = by_dtype["float64"]
    L.append(f"npflows against the references, on this machine: {ok64} of {n64} float64 numbers "
             f"({100.0 * ok64 / max(n64, 1):.1f}%) agree to 13 digits or more; {by_dtype['float32'][1]} of "
             f"{by_dtype['float32'][0]} float32 numbers to 5 or more (worst {f32_worst:.1f})")
    L.append("float64 numbers where npflows has < 13 digits, by case (conditioning: a listed number's attainable "
             "digits less 1.5 are reached; accumulation: an unlisted number within 1.5 digits of 13; npflows: "
             "more is lost than the conditioning explains):")
    for name, items in lows.items():
        by = defaultdict(list)
        for it in items:
            by[it[4]].append(it)
        for kind, its in sorted(by.items()):
            w = min(its, key=lambda t: t[2])
            qs = sorted({t[0] for t in its})
            L.append(f"  {name}: {len(its)} {kind}, worst {w[2]:.1f} digits ({w[0]}{w[1]}, attainable "
                     f"{w[3]:.1f}); in {', '.join(qs)}")
            if full:
                for t in its:
                    L.append(f"      {t[0]}{t[1]}: {t[2]:.2f} digits, attainable {t[3]:.1f}")
    L.append(f"  total: {sum(kinds.values())} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
    for entry, g in gaps:
        L.append(f"variant not generated: {entry}/{g['variant']}: npflows raised {g['error']}")
    no_var = sorted(set().union(*(types_of(c["transform"]) for c in cases if c["variant"] == "base"))
                    - set(VARIANTS) - {"Sequential", "Inverse", "RecomputeSequential"})
    if no_var:
        L.append(f"types with no hard-region variants (base and float32 cases only): {', '.join(no_var)}")
    return "\n".join(L)
