"""The certification report (``python -m validation report``): how many digits of the stored numbers are
certified by the 50-digit reference, which carry fewer than 13 and why."""
from collections import Counter, defaultdict

from .variants import VARIANTS


def summary(cases):
    """Counts over the stored float64 numbers: ``(n_certified, n_ge_13, n_uncertified)``."""
    n = ok = unc = 0
    for c in cases:
        cert = c.get("certification") or {}
        if c["dtype"] != "float64":
            continue
        if cert.get("reference"):
            n += cert["n_numbers"]
            ok += cert["n_ge_13"]
        else:
            unc += sum(1 for _ in _numbers(c))
    return n, ok, unc


def _numbers(case):
    import numpy as np

    from .format import quantities
    for _, v in quantities(case):
        yield from np.asarray(v).ravel()


def types_of(T):
    out = {T["type"]}
    for L in T.get("layers", []):
        out |= types_of(L)
    if "base" in T:
        out |= types_of(T["base"])
    return out


def report(cases, full=False):
    from .format import CASES_DIR, read_file
    L = []
    gaps = [(p.stem, g) for p in sorted(CASES_DIR.glob("*.json")) for g in read_file(p).get("not_generated", [])]
    n, ok, unc = summary(cases)
    total = n + unc
    L.append(f"{len(cases)} cases ({sum(c['dtype'] == 'float64' for c in cases)} float64, "
             f"{sum(c['dtype'] == 'float32' for c in cases)} float32)")
    L.append(f"float64 numbers: {total}; with a 50-digit reference {n}; of all float64 numbers "
             f"{ok} ({100.0 * ok / max(total, 1):.1f}%) carry >= 13 certified digits")
    if unc:
        L.append(f"float64 numbers without a 50-digit reference: {unc} (cases listed below)")
    f32 = [c for c in cases if c["dtype"] == "float32" and (c.get("certification") or {}).get("reference")]
    if f32:
        m = min(c["certification"]["min_digits"] for c in f32)
        nlow = sum(len(c["certification"]["low"]) for c in f32)
        L.append(f"float32 cases: {len(f32)}, worst {m:.1f} certified digits, {nlow} numbers below 5 digits")
    # autograd brute force on the base cases
    ag = [(c["name"], c["certification"].get("autograd", {})) for c in cases
          if c["dtype"] == "float64" and c.get("certification")]
    lo = [(nm, a) for nm, a in ag if a.get("error") or min(a.get("logdet_vs_slogdet_digits", 15),
                                                          a.get("pullback_vs_autograd_digits", 15))
          < a.get("required_digits", 8)]
    L.append(f"brute force (autograd): {len(ag)} float64 cases; logdet vs slogdet and pullback vs autograd "
             f"agree to >= 8 digits (6 for ODE solves) in all but {len(lo)}:")
    for nm, a in lo:
        L.append(f"  {nm}: {a}")
    missing = [c["name"] for c in cases if not (c.get("certification") or {}).get("reference")]
    if missing:
        L.append("cases without a 50-digit reference:")
        for c in cases:
            cert = c.get("certification") or {}
            if not cert.get("reference"):
                L.append(f"  {c['name']}: {cert.get('no_reference', 'not certified')}")
    # low numbers, float64, grouped by case and kind
    L.append("")
    L.append("float64 numbers with < 13 certified digits, by case "
             "(kind: conditioning = the problem's condition number explains the loss; "
             "npflows = more lost than the conditioning explains):")
    kinds = Counter()
    for c in cases:
        cert = c.get("certification") or {}
        if c["dtype"] != "float64" or not cert.get("low"):
            continue
        by = defaultdict(list)
        for item in cert["low"]:
            by[item["kind"]].append(item)
            kinds[item["kind"]] += 1
        for kind, items in sorted(by.items()):
            worst = min(items, key=lambda i: i["digits"])
            qs = sorted({i["quantity"] for i in items})
            L.append(f"  {c['name']}: {len(items)} {kind}, worst {worst['digits']:.1f} digits "
                     f"({worst['quantity']}{worst['index']}: {worst['reason']}); in {', '.join(qs)}")
            if full:
                for i in items:
                    L.append(f"      {i['quantity']}{i['index']}: {i['digits']:.2f} digits, value {i['value']!r}, "
                             f"reference {i['reference']}, {i['reason']}")
    L.append(f"  total: {sum(kinds.values())} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
    for entry, g in gaps:
        L.append(f"variant not generated: {entry}/{g['variant']}: npflows raised {g['error']}")
    no_var = sorted(set().union(*(types_of(c["transform"]) for c in cases if c["variant"] == "base"))
                    - set(VARIANTS) - {"Sequential", "Inverse"})
    if no_var:
        L.append(f"types with no hard-region variants (base and float32 cases only): {', '.join(no_var)}")
    return "\n".join(L)
