"""Regenerate every case from npflows, deterministically, and certify it.

    python -m validation.generate               # write validation/cases/*.json (certifying what changed)
    python -m validation.generate --check       # compare with the committed files, write nothing
    python -m validation.generate --recertify   # recompute every certification (minutes)
    python -m validation.generate --only NAME   # one registry entry
    python -m validation.generate -j 4          # certify in 4 processes

The case specs come from the harness registry (``tests/registry.py`` with every
``tests/registry_<family>.py``): each entry's factory gives the bijector, parameters and inputs.  Each entry
becomes one file ``cases/<entry>.json`` holding its ``base`` case (seeded with 0, as the harness), a
``float32`` case (the same values rounded to float32) and the hard-region variants that
``variants.VARIANTS`` defines for its type.  Cotangents are drawn from a generator seeded by the case name.
A new family therefore gets cases by registration alone; only its mpmath reference (``reference.py``),
its hard regions (``variants.py``) and its README section are written by hand.
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
from .format import CASES_DIR, dumps, numbers_hash, read_file, to_json_array  # noqa: E402
from .variants import variants_for  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"

# Registry entries that cannot (yet) be turned into cases, with the reason.  The coverage test reports
# them as expected failures rather than passing silently.
PENDING = {}

# The checker's requirement: ``min_digits`` of agreement, relative to max(|value|, floor * S), S the
# quantity's scale.  floor * 10^-min_digits is ~50 ulps of S: 1e-14 in float64, 1e-6 in float32.
TOLERANCE = {"float64": {"min_digits": 10.0, "floor": 1e-4}, "float32": {"min_digits": 4.0, "floor": 1e-2}}


def load_registry():
    """The harness registry, merged with every ``tests/registry_<family>.py``."""
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
    factory: object       # () -> (bijector, params, x, y_in or None), float64 or float32
    one_sided: str = None  # the variant's statement that its pullback is a one-sided derivative

    @property
    def name(self):
        return self.entry if self.variant == "base" else f"{self.entry}/{self.variant}"


def specs_for(entry, make):
    """The case specs of one registry entry: base, float32, then the type's hard regions."""
    def base():
        c = make(np.random.default_rng(0))
        return c.bijector, c.params, c.x, None

    def f32():
        b, p, x, _ = base()
        return b, nf.cast_params(p, np.float32), x.astype(np.float32), None

    out = [Spec(entry, "base", "the registry's configuration", base),
           Spec(entry, "float32", "the base case rounded to float32, computed in float32", f32)]
    b = base()[0]
    for v in variants_for(b):
        def hard(v=v):
            b, p, x, _ = base()
            r = v.make(b, p, x, np.random.default_rng(seed_of(f"{entry}/{v.name}")))
            p2, x2 = r[0], r[1]
            y2 = r[2] if len(r) > 2 else None
            return b, {k: np.asarray(a, dtype=np.float64) for k, a in p2.items()}, np.asarray(x2, np.float64), y2
        out.append(Spec(entry, v.name, v.purpose, hard, v.one_sided))
    return out


def _pack(d):
    return {k: to_json_array(v) for k, v in d.items()}


def make_case(spec):
    """One case (everything but its certification) as the JSON-ready dict of the format."""
    b, p, x, y_in = spec.factory()
    dtype = x.dtype
    T = describe(b)
    y, ld, cache = b.forward(p, x)
    b2 = build(T)                                     # the description must determine the transform
    y2, ld2, _ = b2.forward(p, x)
    if not (np.array_equal(y, y2) and np.array_equal(ld, ld2)):
        raise RuntimeError(f"{spec.name}: the description {T} does not rebuild the same transform; "
                           f"add a rule to validation/describe.py")
    y_in = y if y_in is None else np.asarray(y_in, dtype)
    xi, ldi = b.inverse(p, y_in)
    rng = np.random.default_rng(seed_of(spec.name))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dl = rng.standard_normal(ld.shape).astype(dtype)
    case = {
        "name": spec.name, "entry": spec.entry, "variant": spec.variant, "purpose": spec.purpose,
        "family": family_of(b), "dtype": dtype.name, "transform": T,
        "params": _pack(p),
        "forward": {"input": to_json_array(x), "output": to_json_array(y), "logdet": to_json_array(ld)},
        "inverse": {"input": to_json_array(y_in), "output": to_json_array(xi), "logdet": to_json_array(ldi)},
    }
    try:
        dx, grads = b.backward(p, dy, dl, cache)
    except NotImplementedError as e:
        case["pullback"] = None
        case["no_pullback"] = str(e)
    else:
        case["pullback"] = {"dy": to_json_array(dy), "dlogdet": to_json_array(dl), "dx": to_json_array(dx),
                            "dparams": {k: to_json_array(grads[k]) for k in p}}
    for arr in [y, ld, xi, ldi]:
        assert arr.dtype == dtype, f"{spec.name}: {dtype} in gave {arr.dtype} out"
    case["tolerance"] = dict(TOLERANCE[dtype.name])
    if is_solver_certified(T) and dtype == np.float64:      # solved to the case's rtol, not to rounding
        case["tolerance"]["min_digits"] = CHECK_DIGITS
    if spec.one_sided:
        case["one_sided"] = spec.one_sided
    return case


def make_entry(entry, make):
    """The file dict of one registry entry, without certifications.  A hard-region variant that npflows
    cannot evaluate (it raises, e.g. an overflow) is listed under ``not_generated`` with the error: a
    finding about npflows, visible in the file and the report, not a silent gap."""
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


def strip_certification(obj):
    return {**obj, "cases": [{k: v for k, v in c.items() if k != "certification"} for c in obj["cases"]]}


def _old_certifications(path):
    if not path.exists():
        return {}
    try:
        return {c["name"]: c.get("certification") for c in read_file(path)["cases"]}
    except ValueError:
        return {}


def generate(entries=None, certify=True, recertify=False, write=True, jobs=1, log=print):
    """Regenerate (and certify) the files of ``entries`` (default: every registry entry); returns
    ``{entry: file dict}``.  A certification is reused while its ``numbers_sha256`` matches; the others are
    computed, an entry's cases in ``jobs`` processes; each file is written as soon as its entry is done."""
    registry = load_registry()
    names = sorted(registry) if entries is None else entries
    out = {}
    pool = None
    if jobs > 1 and certify:
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
            old = _old_certifications(CASES_DIR / f"{name}.json")
            todo = []
            for case in obj["cases"]:
                prev = old.get(case["name"])
                if prev is not None and prev.get("numbers_sha256") == numbers_hash(case) and not recertify:
                    case["certification"] = prev
                elif certify:
                    todo.append(case)
            if todo:
                from .certify import certify_case
                certs = list(pool.map(certify_case, todo)) if pool else [certify_case(c) for c in todo]
                for case, cert in zip(todo, certs):
                    case["certification"] = cert
            out[name] = obj
            if write:
                CASES_DIR.mkdir(parents=True, exist_ok=True)
                path, text = CASES_DIR / f"{name}.json", dumps(obj)
                if not path.exists() or path.read_text() != text:
                    path.write_text(text)
            log(f"{name}: {len(obj['cases'])} cases, {len(todo)} certified now ({time.perf_counter() - t0:.1f} s)")
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def stale_files(registry_names):
    """Committed case files whose registry entry no longer exists."""
    return sorted(p.stem for p in CASES_DIR.glob("*.json") if p.stem not in registry_names)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m validation.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    ap.add_argument("--recertify", action="store_true", help="recompute every certification")
    ap.add_argument("--no-certify", action="store_true", help="write numbers without certifying new ones")
    ap.add_argument("--only", action="append", help="registry entry (repeatable)")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="processes for the certification")
    a = ap.parse_args(argv)
    if a.check:
        registry = load_registry()
        bad = []
        for name in (a.only or sorted(registry)):
            path = CASES_DIR / f"{name}.json"
            if not path.exists():
                bad.append(f"{name}: no committed file")
                continue
            new = dumps(strip_certification(make_entry(name, registry[name])))
            if new != dumps(strip_certification(read_file(path))):
                bad.append(f"{name}: regenerated numbers differ from {path.name}")
        for s in stale_files(set(registry)):
            bad.append(f"{s}: case file without a registry entry")
        print("\n".join(bad) if bad else "all case files match a fresh regeneration")
        return 1 if bad else 0
    generate(a.only, certify=not a.no_certify, recertify=a.recertify, jobs=a.jobs)
    registry = load_registry()
    for s in stale_files(set(registry)):
        print(f"warning: {s}.json has no registry entry any more; delete it if the entry was removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
