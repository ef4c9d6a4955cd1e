"""Golden cases with a context (conditional flows, issue 15): what tests/test_validation.py does not say.

* the format: a conditional case stores ``context`` and ``pullback.dcontext``; an unconditional one has neither
  key, and its hashes are those of the format without contexts;
* the stored ``dcontext`` (the 50-digit reference's complex step; for the CNF, npflows' adjoint certified by
  autograd on RK4) against central differences of npflows' *forward* in the context, so neither the reference's
  context layout nor npflows' hand-derived backward is checked against itself;
* the context matters: the same case with another context fails the checker;
* the checker skips a conditional case for an adapter that does not pass a context;
* zuko, nflows and torchdiffeq reproduce the conditional cases they map, dcontext included.
"""
import copy

import numpy as np
import pytest

from validation import check
from validation import format as F
from validation.adapters import npflows_adapter
from validation.describe import build

CASES = F.load_cases()
COND = [c for c in CASES if c.get("context") is not None]


def test_conditional_cases_exist_and_carry_dcontext():
    entries = {c["entry"] for c in COND}
    assert {"cond_affine_coupling", "cond_additive_coupling", "cond_spline_coupling", "cond_realnvp_actnorm",
            "cond_maf", "cond_iaf_gated", "cond_autoregressive_spline"} <= entries, entries
    for c in COND:
        N, C = np.shape(c["context"])
        assert N == len(c["forward"]["input"]) and C == _context_dim(c["transform"]), c["name"]
        assert np.shape(c["pullback"]["dcontext"]) == (N, C), c["name"]
        assert ("pullback.dcontext", c["pullback"]["dcontext"]) in F.quantities(c)
        if c["variant"] == "base":           # (a variant may not read it: spline inputs all in the linear tails)
            assert np.any(np.asarray(c["pullback"]["dcontext"]) != 0), c["name"]


def _context_dim(T):
    if T.get("context_dim") is not None:
        return T["context_dim"]
    for v in T.values():
        for L in (v if isinstance(v, list) else [v]):
            if isinstance(L, dict) and "type" in L and _context_dim(L) is not None:
                return _context_dim(L)
    return None


def test_unconditional_cases_have_no_context_keys_and_unchanged_hashes():
    """A case without a context hashes as the format did before contexts (no ``context`` key in the body):
    the stored certification hashes of every unconditional case still match."""
    plain = [c for c in CASES if "context" not in c]
    assert plain
    for c in plain:
        assert "dcontext" not in (c.get("pullback") or {}), c["name"]
        assert c["certification"]["numbers_sha256"] == F.numbers_hash(c), c["name"]
        assert all(not q.endswith("dcontext") for q, _ in F.quantities(c))


def test_the_context_is_hashed():
    c = copy.deepcopy(COND[0])
    h_in, h_num = F.inputs_hash(c), F.numbers_hash(c)
    c["context"][0][0] = c["context"][0][0] + 1.0
    assert F.inputs_hash(c) != h_in and F.numbers_hash(c) != h_num


def _objective(b, P, x, ctx, dy, dl):
    y, ld, _ = b.forward(P, x, ctx)
    return float(np.sum(dy * y) + np.sum(dl * ld))


@pytest.mark.parametrize("name", sorted({c["entry"] for c in COND}))
def test_stored_dcontext_matches_central_differences_of_npflows_forward(name):
    """Central differences (h = 1e-5 |c| or 1e-5) of sum(dy y) + sum(dlogdet logdet) through npflows' forward
    only.  Their error: truncation O(h^2) ~ 1e-10 times the third derivative, rounding ~1e-16 |f| / h ~ 1e-11
    (1e-8 for the CNF, whose solves at rtol = 1e-8 differ smoothly in c but not below the tolerance); the
    tolerance 1e-6 (1e-4 for the CNF) relative to the largest |dcontext| (at least 1) is far above both and far
    below any layout error (a misplaced context row changes dcontext at O(1))."""
    case = next(c for c in COND if c["entry"] == name and c["variant"] == "base")
    b = build(case["transform"])
    P = {k: np.asarray(v) for k, v in case["params"].items()}
    x, ctx = np.asarray(case["forward"]["input"]), np.asarray(case["context"])
    dy, dl = np.asarray(case["pullback"]["dy"]), np.asarray(case["pullback"]["dlogdet"])
    stored = np.asarray(case["pullback"]["dcontext"])
    fd = np.zeros_like(ctx)
    for i in np.ndindex(ctx.shape):
        h = 1e-5 * max(abs(ctx[i]), 1.0)
        cp, cm = ctx.copy(), ctx.copy()
        cp[i] += h
        cm[i] -= h
        fd[i] = (_objective(b, P, x, cp, dy, dl) - _objective(b, P, x, cm, dy, dl)) / (2 * h)
    tol = 1e-4 if "cnf" in name else 1e-6
    err = np.max(np.abs(fd - stored)) / max(1.0, np.max(np.abs(stored)))
    assert err < tol, (name, err)


def test_a_wrong_context_fails_the_checker():
    """npflows on a conditional case with its context shifted by 0.5: forward outputs and dcontext disagree, so
    the checker's pass on the real context is a statement about the context."""
    for name in ("cond_affine_coupling", "cond_maf"):
        case = next(c for c in COND if c["name"] == name)
        good = check.compare(case, npflows_adapter.run(case))
        bad_case = copy.deepcopy(case)
        bad_case["context"] = (np.asarray(case["context"]) + 0.5).tolist()
        got = npflows_adapter.run(bad_case)
        bad = check.compare(case, got)          # the stored numbers, npflows at another context
        assert good.status == "pass" and bad.status == "FAIL", (good.first, bad.first)
        assert bad.per_quantity["forward.output"][1] > 0 and bad.per_quantity["pullback.dcontext"][1] > 0


def test_an_adapter_without_a_context_skips_conditional_cases():
    class Old:
        NAME = "old"

        @staticmethod
        def supports(case):
            return None

        @staticmethod
        def run(case):
            raise AssertionError("a conditional case must not reach an adapter that ignores the context")
    res = check.check(Old, COND[:3], out=lambda s: None)
    assert [r.status for r in res] == ["skip"] * 3
    assert all("context" in r.first for r in res)


@pytest.mark.parametrize("adapter,names", [
    ("zuko", ["cond_affine_coupling", "cond_additive_coupling", "cond_spline_coupling", "cond_realnvp_actnorm",
              "cond_maf", "cond_iaf_gated", "cond_autoregressive_spline"]),
    ("nflows", ["cond_additive_coupling", "cond_spline_coupling"]),
])
def test_peer_adapters_reproduce_the_conditional_cases(adapter, names):
    """Base and float32 cases: every quantity, dcontext included, at the cases' tolerance."""
    pytest.importorskip("torch")
    pytest.importorskip(adapter)
    cases = [c for c in COND if c["entry"] in names and c["variant"] in ("base", "float32")]
    res = check.check(check.load_adapter(adapter), cases, out=lambda s: None)
    assert len(res) == 2 * len(names)
    assert all(r.status == "pass" for r in res), [(r.name, r.status, r.first) for r in res if r.status != "pass"]
    assert all(r.coverage.get("pullback.dcontext") == "computed" for r in res)


def test_torchdiffeq_reproduces_the_conditional_cnf_cases():
    """torchdiffeq's adjoint (the context among its adjoint_params) on the float64 conditional CNF cases."""
    pytest.importorskip("torch")
    pytest.importorskip("torchdiffeq")
    cases = [c for c in COND if c["entry"].startswith("cond_cnf") and c["variant"] == "base"]
    assert cases
    res = check.check(check.load_adapter("torchdiffeq"), cases, out=lambda s: None)
    assert all(r.status == "pass" for r in res), [(r.name, r.status, r.first) for r in res if r.status != "pass"]
    assert all(r.coverage.get("pullback.dcontext") == "computed" for r in res)
