"""Regenerate every case, deterministically, on any machine.

    python -m validation.generate                  # write validation/cases/*.json (computing what changed)
    python -m validation.generate --check          # inputs and integrity against the committed files
    python -m validation.generate --check --full   # recompute every reference too and compare bytes
    python -m validation.generate --recompute      # recompute every expected number (minutes)
    python -m validation.generate --only NAME      # one registry entry
    python -m validation.generate -j 2             # 50-digit references in 2 processes

The case specs come from the harness registry (``tests/registry.py`` with every
``tests/registry_<family>.py``): each entry's factory gives the bijector, parameters and inputs.  Each entry
becomes one file ``cases/<entry>.json`` holding its ``base`` case (seeded with 0, as the harness), a
``float32`` case (the same values rounded to float32) and the hard-region variants that
``variants.VARIANTS`` defines for its type.  Cotangents are drawn from a generator seeded by the case name.

**The expected numbers are not npflows' results.**  They are the 50-digit reference (``reference.py``,
mpmath, written from README.md) at the stored inputs, correctly rounded to the case's dtype, so a
regeneration writes byte-identical files on every machine and BLAS kernel: the inputs come from seeded
generators and elementwise arithmetic, the references from arbitrary-precision arithmetic.  npflows is
checked against them like any other implementation (``python -m validation check npflows``).  The one
exception is an ODE solve (the CNF), which has no 50-digit reference: its numbers are npflows' solve at
the case's tolerance, certified against a tight solve, and a regeneration must agree with them at their
certified digits.

A new family gets cases by registration alone; only its mpmath reference (``reference.py``), its hard
regions (``variants.py``) and its README section are written by hand.
"""
import argparse
import importlib
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):                      # run as a script: python validation/generate.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "validation"

import npflows as nf  # noqa: E402

from . import FORMAT_VERSION  # noqa: E402
from .certify_ode import CHECK_DIGITS, is_solver_certified  # noqa: E402
from .describe import build, describe, family_of  # noqa: E402
from .format import (CASES_DIR, dumps, inputs_hash, numbers_hash, quantities, read_file,  # noqa: E402
                     to_json_array)
from .variants import variant_context, variants_for  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"

# Registry entries that cannot (yet) be turned into cases, with the reason.  The coverage test reports
# them as expected failures rather than passing silently.
_IMAGE_CERT = ("an image layer of issue 13: its 50-digit reference is being computed (an hour on two busy cores)")
PENDING = {
}

# The checker's requirement: ``min_digits`` of agreement, relative to max(|value|, floor * S), S the
# quantity's scale.  floor * 10^-min_digits is ~50 ulps of S: 1e-14 in float64, 1e-6 in float32.
TOLERANCE = {"float64": {"min_digits": 10.0, "floor": 1e-4}, "float32": {"min_digits": 4.0, "floor": 1e-2}}


def load_registry():
    """The harness registry, merged with every ``tests/registry_<family>.py``."""
    if not (TESTS_DIR / "registry.py").exists():
        raise SystemExit("the generator needs npflows' repository (tests/registry.py); an installed copy of "
                         "the validation package can check implementations but not regenerate the cases")
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    return importlib.import_module("registry").REGISTRY


def seed_of(name):
    return zlib.crc32(name.encode())


@dataclass
class Spec:
    entry: str
    variant: str
    purpose: str
    factory: object       # () -> (bijector, params, x, y_in or None[, context or None]), float64 or float32
    one_sided: str = None  # the variant's statement that its pullback is a one-sided derivative

    @property
    def name(self):
        return self.entry if self.variant == "base" else f"{self.entry}/{self.variant}"


def specs_for(entry, make):
    """The case specs of one registry entry: base, float32, then the type's hard regions."""
    def base():
        c = make(np.random.default_rng(0))
        return c.bijector, c.params, c.x, None, getattr(c, "context", None)

    def f32():
        b, p, x, _, ctx = base()
        return (b, nf.cast_params(p, np.float32), x.astype(np.float32), None,
                None if ctx is None else ctx.astype(np.float32))

    out = [Spec(entry, "base", "the registry's configuration", base),
           Spec(entry, "float32", "the base case rounded to float32, computed in float32", f32)]
    b = base()[0]
    for v in variants_for(b):
        def hard(v=v):
            b, p, x, _, ctx = base()
            with variant_context(ctx):        # a conditional case's variant keeps the base case's context
                r = v.make(b, p, x, np.random.default_rng(seed_of(f"{entry}/{v.name}")))
            p2, x2 = r[0], r[1]
            y2 = r[2] if len(r) > 2 else None
            if ctx is not None and len(x2) != len(ctx):   # a variant with another batch: rows in turn
                ctx = ctx[np.arange(len(x2)) % len(ctx)]
            return (b, {k: np.asarray(a, dtype=np.float64) for k, a in p2.items()}, np.asarray(x2, np.float64), y2,
                    ctx)
        out.append(Spec(entry, v.name, v.purpose, hard, v.one_sided))
    return out


def _pack(d):
    return {k: to_json_array(v) for k, v in d.items()}


def make_case(spec):
    """One case's inputs as the JSON-ready dict of the format, its expected numbers still ``None``.

    The inputs (parameters, forward input, cotangents, an explicit inverse input) come from npflows'
    registry factories and seeded generators through elementwise arithmetic only, so they are the same
    bits on every machine.  The expected numbers are filled by the certification (``certify.certify_case``):
    the 50-digit reference correctly rounded; for an ODE solve (no such reference) they are npflows' solve,
    filled here.  A conditional case (the factory's fifth value, a context ``(N, C)``) stores ``context`` and
    expects ``pullback.dcontext``; a case without one has neither key (its file and hashes are unchanged)."""
    b, p, x, y_in, *rest = spec.factory()
    ctx = rest[0] if rest else None
    dtype = x.dtype
    T = describe(b)
    y, ld, cache = b.forward(p, x, ctx)
    b2 = build(T)                                     # the description must determine the transform
    y2, ld2, _ = b2.forward(p, x, ctx)
    if not (np.array_equal(y, y2) and np.array_equal(ld, ld2)):
        raise RuntimeError(f"{spec.name}: the description {T} does not rebuild the same transform; "
                           f"add a rule to npflows/describe.py")
    if y.dtype != dtype or ld.dtype != dtype:
        raise RuntimeError(f"{spec.name}: {dtype} in gave {y.dtype} out")
    rng = np.random.default_rng(seed_of(spec.name))
    dy = rng.standard_normal(y.shape).astype(dtype)      # the output's shape (a reshape changes it)
    dl = rng.standard_normal(x.shape[:1]).astype(dtype)
    case = {
        "name": spec.name, "entry": spec.entry, "variant": spec.variant, "purpose": spec.purpose,
        "family": family_of(b), "dtype": dtype.name, "transform": T,
        "params": _pack(p),
    }
    if ctx is not None:
        if ctx.dtype != dtype:
            raise RuntimeError(f"{spec.name}: a {ctx.dtype} context with {dtype} inputs")
        case["context"] = to_json_array(ctx)
    case.update({
        "forward": {"input": to_json_array(x), "output": None, "logdet": None},
        "inverse": {"input": None if y_in is None else to_json_array(np.asarray(y_in, dtype)),
                    "output": None, "logdet": None},
        "pullback": {"dy": to_json_array(dy), "dlogdet": to_json_array(dl), "dx": None, "dparams": None},
    })
    if ctx is not None:
        case["pullback"] = {"dy": case["pullback"]["dy"], "dlogdet": case["pullback"]["dlogdet"], "dx": None,
                            "dcontext": None, "dparams": None}
    case["tolerance"] = dict(TOLERANCE[dtype.name])
    if spec.one_sided:
        case["one_sided"] = spec.one_sided
    if is_solver_certified(T):                 # an ODE solve: npflows' solve at the case's rtol, atol
        y_inv = y if y_in is None else np.asarray(y_in, dtype)
        xi, ldi = b.inverse(p, y_inv, ctx)
        dx, grads, *dc = b.backward(p, dy, dl, cache)
        case["forward"].update(output=to_json_array(y), logdet=to_json_array(ld))
        case["inverse"].update(input=to_json_array(y_inv), output=to_json_array(xi), logdet=to_json_array(ldi))
        case["pullback"].update(dx=to_json_array(dx), dparams={k: to_json_array(grads[k]) for k in p})
        if ctx is not None:
            case["pullback"]["dcontext"] = to_json_array(dc[0])
        if dtype == np.float64:                # solved to the case's rtol, not to rounding
            case["tolerance"]["min_digits"] = CHECK_DIGITS
    return case


def make_entry(entry, make):
    """The file dict of one registry entry, inputs only (see :func:`make_case`).  A hard-region variant
    whose inputs npflows cannot build is listed under ``not_generated`` with the error: a finding, visible
    in the file and the report, not a silent gap."""
    cases, skipped = [], []
    for s in specs_for(entry, make):
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                cases.append(make_case(s))
        except (FloatingPointError, ValueError, ArithmeticError) as e:
            if s.variant in ("base", "float32"):
                raise
            skipped.append({"variant": s.variant, "purpose": s.purpose, "error": f"{type(e).__name__}: {e}"})
    obj = {"format": "npflows-validation", "format_version": FORMAT_VERSION, "entry": entry, "cases": cases}
    if skipped:
        obj["not_generated"] = skipped
    return obj


EXPECTED_KEYS = (("forward", "output"), ("forward", "logdet"), ("inverse", "input"), ("inverse", "output"),
                 ("inverse", "logdet"), ("pullback", "dx"), ("pullback", "dparams"))


def _old_cases(path):
    if not path.exists():
        return {}
    import json
    try:                 # any version: a case is reused only through its certification's inputs_sha256
        return {c["name"]: c for c in json.loads(path.read_text())["cases"]}
    except (ValueError, KeyError):
        return {}


def solver_numbers_agree(new, old):
    """For an ODE-solve case (no 50-digit reference): do ``new``'s numbers (a regeneration) agree with
    ``old``'s at the digits ``old``'s certification gives each quantity (less one digit)?  Returns the list
    of disagreements (empty: they agree)."""
    from .check import denominators, digits_of_agreement
    certified = old["certification"]["solver"]["digits"]
    dens = denominators(old)
    bad = []
    for (name, e), (_, v) in zip(quantities(old), quantities(new)):
        need = min(certified[name], 15.0) - 1.0
        d = digits_of_agreement(np.asarray(v, dtype=np.float64), np.asarray(e, dtype=np.float64), dens[name])
        if d.size and d.min() < need:
            bad.append(f"{old['name']} {name}: regenerated numbers agree to {d.min():.1f} digits, "
                       f"certified {certified[name]:.1f}")
    return bad


def _reuse(case, old):
    """Take ``old``'s expected numbers, tolerance and certification when ``case``'s inputs are ``old``'s
    (and, for an ODE solve, its regenerated numbers agree with ``old``'s at the certified digits)."""
    cert = old.get("certification") or {}
    if cert.get("inputs_sha256") != inputs_hash(case):
        return False
    if is_solver_certified(case["transform"]) and solver_numbers_agree(case, old):
        return False
    for a, b in EXPECTED_KEYS:
        case[a][b] = old[a][b]
    if "dcontext" in case["pullback"]:         # a conditional case's only
        case["pullback"]["dcontext"] = old["pullback"]["dcontext"]
    case["tolerance"] = old["tolerance"]
    case["certification"] = cert
    return True


def _certified(case):
    from .certify import certify_case
    cert = certify_case(case)
    case["certification"] = cert
    return case


def generate(entries=None, recompute=False, write=True, jobs=1, log=print):
    """Regenerate the files of ``entries`` (default: every registry entry); returns ``{entry: file dict}``.
    A case whose inputs are unchanged keeps its expected numbers and certification (they are a function of
    the inputs); the others are computed (the 50-digit reference, minutes for everything), an entry's
    cases in ``jobs`` processes; each file is written as soon as its entry is done."""
    registry = load_registry()
    names = sorted(registry) if entries is None else entries
    out = {}
    pool = None
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(jobs)
    try:
        for name in names:
            if name in PENDING:
                log(f"{name}: pending ({PENDING[name]})")
                continue
            t0 = time.perf_counter()
            try:
                obj = make_entry(name, registry[name])
            except Exception as e:        # one broken entry must not stop the others; the test reports it
                log(f"{name}: ERROR, no cases written: {type(e).__name__}: {e}")
                continue
            old = _old_cases(CASES_DIR / f"{name}.json")
            todo = [i for i, c in enumerate(obj["cases"])
                    if recompute or c["name"] not in old or not _reuse(c, old[c["name"]])]
            if todo:
                work = [obj["cases"][i] for i in todo]
                done = list(pool.map(_certified, work)) if pool else [_certified(c) for c in work]
                for i, c in zip(todo, done):
                    obj["cases"][i] = c
            out[name] = obj
            if write:
                CASES_DIR.mkdir(parents=True, exist_ok=True)
                path, text = CASES_DIR / f"{name}.json", dumps(obj)
                if not path.exists() or path.read_text() != text:
                    path.write_text(text)
            log(f"{name}: {len(obj['cases'])} cases, {len(todo)} computed now ({time.perf_counter() - t0:.1f} s)")
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def check_committed(names, full=False, jobs=1, log=print):
    """Compare a regeneration with the committed files; returns the list of differences (empty: match).

    Fast (default): every case's inputs are rebuilt from npflows and must hash to the committed
    ``inputs_sha256``; the committed numbers must match their ``numbers_sha256``; an ODE solve is re-solved
    and must agree at its certified digits.  ``full``: the 50-digit references are recomputed too and every
    file must be byte-identical (the CNF's at their certified digits); minutes."""
    registry = load_registry()
    bad = []
    for name in names:
        path = CASES_DIR / f"{name}.json"
        if name in PENDING and not path.exists():
            continue                     # listed with its reason; the coverage test reports it as xfail
        if not path.exists():
            bad.append(f"{name}: no committed file")
            continue
        committed = read_file(path)
        old = {c["name"]: c for c in committed["cases"]}
        if full:
            obj = generate([name], recompute=True, write=False, jobs=jobs, log=lambda *a: None)[name]
            for c in obj["cases"]:
                if is_solver_certified(c["transform"]) and c["name"] in old:
                    diff = solver_numbers_agree(c, old[c["name"]])
                    bad += diff
                    c.update({k: old[c["name"]][k] for k in ("forward", "inverse", "pullback", "certification")})
            if dumps(obj) != dumps(committed):
                bad.append(f"{name}: the regenerated file differs from {path.name}")
            continue
        obj = make_entry(name, registry[name])
        if [c["name"] for c in obj["cases"]] != list(old):
            bad.append(f"{name}: regenerated cases {[c['name'] for c in obj['cases']]} != committed {list(old)}")
            continue
        if obj.get("not_generated") != committed.get("not_generated"):
            bad.append(f"{name}: not_generated differs")
        for c in obj["cases"]:
            o = old[c["name"]]
            cert = o.get("certification") or {}
            if cert.get("numbers_sha256") != numbers_hash(o):
                bad.append(f"{c['name']}: committed numbers do not match their numbers_sha256")
            if cert.get("inputs_sha256") != inputs_hash(c):
                bad.append(f"{c['name']}: regenerated inputs differ from the committed ones")
            elif is_solver_certified(c["transform"]):
                bad += solver_numbers_agree(c, o)
            for k in ("purpose", "family", "tolerance", "one_sided"):
                if k == "tolerance":
                    if {kk: v for kk, v in o[k].items() if kk != "conditioned"} != \
                            {kk: v for kk, v in c[k].items() if kk != "conditioned"}:
                        bad.append(f"{c['name']}: tolerance differs")
                elif o.get(k) != c.get(k):
                    bad.append(f"{c['name']}: {k} differs")
    for s in stale_files(set(registry)):
        bad.append(f"{s}: case file without a registry entry")
    return bad


def stale_files(registry_names):
    """Committed case files whose registry entry no longer exists."""
    return sorted(p.stem for p in CASES_DIR.glob("*.json") if p.stem not in registry_names)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m validation.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="compare a regeneration with the committed files (inputs and integrity); write nothing")
    ap.add_argument("--full", action="store_true",
                    help="with --check: recompute the 50-digit references too and compare bytes (minutes)")
    ap.add_argument("--recompute", action="store_true",
                    help="recompute every expected number and certification, even for unchanged inputs")
    ap.add_argument("--only", action="append", help="registry entry (repeatable)")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="processes for the 50-digit references")
    a = ap.parse_args(argv)
    registry = load_registry()
    if a.check:
        bad = check_committed(a.only or sorted(registry), full=a.full, jobs=a.jobs)
        print("\n".join(bad) if bad else "all case files match a fresh regeneration")
        return 1 if bad else 0
    generate(a.only, recompute=a.recompute, jobs=a.jobs)
    for s in stale_files(set(registry)):
        print(f"warning: {s}.json has no registry entry any more; delete it if the entry was removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
