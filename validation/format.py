"""Reading and writing case files (format version 1, see README.md), and the digit metric (LRE).

A case file is JSON.  Every float is written with Python's ``repr``, the shortest decimal string that
reads back to the same double, so any conforming JSON reader recovers the stored doubles bit for bit.
Arrays are nested lists in row-major (C) order; their shapes follow from the nesting.  float32 values are
stored as the doubles they convert to exactly (the case's ``dtype`` says to cast them back).  A conditional case
also has ``context`` ``(N, C)`` and ``pullback.dcontext``; an unconditional one has neither key, so its hashes
and bytes are those of the format before contexts.
"""
import contextlib
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from . import FORMAT_VERSION


class Dynamic:
    """A value that a ``with`` block sets for the code it calls (a stack, so blocks nest): ``with d.bound(v):``
    then ``d.get()``.  The case's context reaches the adapters' builders and the variants this way, so their
    signatures need no argument for it."""

    def __init__(self, default=None):
        self._stack = [default]

    @contextlib.contextmanager
    def bound(self, value):
        self._stack.append(value)
        try:
            yield value
        finally:
            self._stack.pop()

    def get(self):
        return self._stack[-1]

CASES_DIR = Path(__file__).resolve().parent / "cases"
MAX_DIGITS = 15.0     # LRE cap: float64 carries 15.95 decimal digits; a few ulps of rounding leave ~15.3

# ----------------------------------------------------------------------------- arrays <-> JSON values


def to_json_array(a):
    """A float array as nested lists of Python floats (exact doubles)."""
    a = np.asarray(a)
    if not np.all(np.isfinite(a)):
        raise ValueError("case arrays must be finite")
    return np.asarray(a, dtype=np.float64).tolist()


def from_json_array(v, dtype=np.float64):
    a = np.array(v, dtype=np.float64)
    out = a.astype(dtype)
    if not np.array_equal(out.astype(np.float64), a):
        raise ValueError(f"stored values are not exactly representable in {np.dtype(dtype).name}")
    return out


# ----------------------------------------------------------------------------- compact, diffable JSON


def _dump(v, indent, level):
    pad = " " * (indent * level)
    inner = " " * (indent * (level + 1))
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {_dump(val, indent, level + 1)}" for k, val in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, (list, tuple)):
        if not v:
            return "[]"
        if all(not isinstance(e, (list, tuple, dict)) for e in v):      # a row of scalars: one line
            return "[" + ", ".join(_dump(e, indent, level) for e in v) + "]"
        return "[\n" + ",\n".join(inner + _dump(e, indent, level + 1) for e in v) + "\n" + pad + "]"
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("JSON case files hold finite numbers only")
        return repr(v)
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return _dump(v.item(), indent, level)
    return json.dumps(v)


def dumps(obj):
    """JSON text: dicts indented, each innermost row of numbers on one line (readable diffs)."""
    return _dump(obj, 1, 0) + "\n"


def write_file(path, obj):
    Path(path).write_text(dumps(obj))


def read_file(path):
    obj = json.loads(Path(path).read_text())
    if obj.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {obj.get('format_version')!r}, this reader knows "
                         f"{FORMAT_VERSION}")
    return obj


def case_files(cases_dir=CASES_DIR):
    return sorted(Path(cases_dir).glob("*.json"))


def load_cases(cases_dir=CASES_DIR, select=None):
    """Every case of every file, in file order; ``select`` is a substring filter on case names."""
    out = []
    for path in case_files(cases_dir):
        for case in read_file(path)["cases"]:
            if select is None or select in case["name"]:
                out.append(case)
    return out


HASHED = ("transform", "dtype", "params", "forward", "inverse", "pullback")


def numbers_hash(case):
    """SHA-256 of a case's numbers (the transform, dtype, parameters, inputs and expected values): the
    certification stores it, so an edit of any stored number shows, while names, purposes and tolerances
    may change freely.  A conditional case's ``context`` is hashed too; a case without one hashes as before
    (no new key), so the unconditional cases keep their hashes byte for byte."""
    body = {k: case.get(k) for k in HASHED}
    if case.get("context") is not None:
        body["context"] = case["context"]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def inputs_hash(case):
    """SHA-256 of what determines a case's expected numbers: the transform, dtype, parameters, forward
    input, cotangents and, where it is not the forward output, the inverse's input.  The generator reuses
    the stored expected numbers while it matches (they are a function of these alone).  Computed on a case
    as the generator builds it, before its expected numbers are filled: an inverse input of ``None`` is the
    forward output, any other is the variant's own (the generator compares a regeneration's hash with the
    stored one, both taken at that stage)."""
    inv = case["inverse"].get("input")
    if inv is None or inv == case["forward"].get("output"):
        inv = "the forward output"
    pb = case.get("pullback") or {}
    body = {"transform": case["transform"], "dtype": case["dtype"], "params": case["params"],
            "x": case["forward"]["input"], "inverse_input": inv, "dy": pb.get("dy"), "dlogdet": pb.get("dlogdet")}
    if case.get("context") is not None:               # absent from an unconditional case: its hash is unchanged
        body["context"] = case["context"]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- quantities of a case


def quantities(case):
    """``[(name, stored value)]`` for every expected quantity of a case, in a fixed order:
    forward.output, forward.logdet, inverse.output, inverse.logdet, pullback.dx, pullback.dcontext (a
    conditional case only), pullback.dparams[key]."""
    out = [("forward.output", case["forward"]["output"]), ("forward.logdet", case["forward"]["logdet"]),
           ("inverse.output", case["inverse"]["output"]), ("inverse.logdet", case["inverse"]["logdet"])]
    pb = case.get("pullback")
    if pb is not None:
        out.append(("pullback.dx", pb["dx"]))
        if case.get("context") is not None:         # a conditional case: the context's cotangent too
            out.append(("pullback.dcontext", pb.get("dcontext")))
        out += [(f"pullback.dparams[{k}]", v) for k, v in pb["dparams"].items()]
    return out


# ----------------------------------------------------------------------------- digits (LRE)


def lre(value, reference, cap=MAX_DIGITS):
    """NIST StRD's log relative error, elementwise: ``-log10(|value - ref| / |ref|)``, or
    ``-log10|value|`` where ``ref == 0``; clipped to ``[0, cap]`` (``cap`` when equal).  ``reference``
    may be an array of mpmath numbers (the 50-digit values) or of floats."""
    v = np.asarray(value, dtype=np.float64)
    r = np.asarray(reference, dtype=object).reshape(v.shape)
    out = np.empty(v.shape)
    for i in np.ndindex(v.shape):
        out[i] = _lre1(v[i], r[i], cap)
    return out


def _lre1(v, r, cap):
    import mpmath as mp
    with mp.workdps(50):             # at the reference's precision, not mpmath's default 15 digits
        r = mp.mpf(r)
        err = abs(mp.mpf(float(v)) - r)
        if err == 0:
            return cap
        d = -mp.log10(err / abs(r)) if r != 0 else -mp.log10(err)
        return float(min(cap, max(0.0, d)))
