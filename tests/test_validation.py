"""The validation suite (validation/): coverage of the registry, exact regeneration, certification, the
checker, and the README's promises.  The slow 50-digit certification runs in the generator and is stored;
here a cheap part of it is recomputed and compared."""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from validation import certify, certify_ode, check, generate, reference, report
from validation import format as F
from validation.adapters import npflows_adapter

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = generate.load_registry()
FILES = {p.stem: p for p in F.case_files()}
CASES = F.load_cases()
README = (ROOT / "validation" / "README.md").read_text()


def _regen_hint():
    return "run `python -m validation.generate` and commit validation/cases/ (see validation/README.md)"


# --------------------------------------------------------------------------- coverage


def test_every_registered_transform_has_cases():
    missing = [n for n in sorted(REGISTRY) if n not in FILES and n not in generate.PENDING]
    assert not missing, f"registered transforms without validation cases: {missing}; {_regen_hint()}"


def test_pending_registry_entries_are_reported():
    stale = sorted(set(generate.PENDING) - set(REGISTRY))
    assert not stale, f"PENDING lists entries that are not in the registry: {stale}"
    assert all(isinstance(r, str) and r for r in generate.PENDING.values()), "every pending entry needs a reason"
    if generate.PENDING:
        pytest.xfail(f"registry entries pending validation cases: {generate.PENDING}")


def test_no_case_file_without_registry_entry():
    stale = generate.stale_files(set(REGISTRY))
    assert not stale, f"case files whose registry entry is gone: {stale}; delete them or restore the entries"


def test_every_case_file_has_base_and_float32_cases():
    for name, path in FILES.items():
        variants = [c["variant"] for c in F.read_file(path)["cases"]]
        assert variants[:2] == ["base", "float32"], f"{path.name}: cases {variants}"


# --------------------------------------------------------------------------- regeneration


@pytest.mark.parametrize("name", sorted(n for n in FILES if n in REGISTRY))
def test_regeneration_matches_committed_file(name):
    """The inputs rebuilt from npflows' registry hash to the committed ones, the committed numbers match
    their hash, and an ODE solve re-solved agrees at its certified digits.  (The expected numbers are the
    50-digit reference of those inputs: see the bit-for-bit test below and ``--check --full``.)"""
    bad = generate.check_committed([name])
    assert not bad, f"{'; '.join(bad[:8])}; if the change is intended, {_regen_hint()}"


def test_case_files_are_canonical_and_read_back_exactly():
    for path in FILES.values():
        text = path.read_text()
        obj = json.loads(text)
        assert F.dumps(obj) == text, f"{path.name} is not in the canonical layout; {_regen_hint()}"


def test_float_encoding_round_trips_every_double():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.standard_normal(1000) * 10.0 ** rng.integers(-300, 300, 1000),
                        [5e-324, 2.0 ** -1074 * 3, 1.7976931348623157e308, -0.0, 0.1, 1 / 3]])
    back = np.array(json.loads(F.dumps({"a": F.to_json_array(a)}))["a"])
    assert np.array_equal(back.view(np.int64), a.view(np.int64))
    f32 = rng.standard_normal(100).astype(np.float32)
    assert np.array_equal(F.from_json_array(json.loads(json.dumps(F.to_json_array(f32))), np.float32), f32)
    with pytest.raises(ValueError):
        F.from_json_array([0.1], np.float32)          # 0.1 is no float32 value


def test_rounding_to_float32_is_correct_rounding_of_the_50_digit_value():
    import mpmath as mp
    with mp.workdps(50):
        third = mp.mpf(1) / 3
        tie_up = mp.mpf(1) + mp.mpf(2) ** -24 + mp.mpf(10) ** -40      # just above a float32 midpoint
        vals = np.array([third, -third, tie_up, mp.mpf(2) ** -140, mp.mpf(0)], dtype=object)
        got = certify.round_to(vals, "float32")
    assert got[0] == float(np.float32(1 / 3)) and got[1] == -got[0]
    assert got[2] == 1 + 2.0 ** -23                # rounds up, past the midpoint
    assert got[3] == float(np.float32(2.0 ** -140)) and got[4] == 0.0


# --------------------------------------------------------------------------- the expected numbers


def test_every_case_is_certified_for_its_current_numbers():
    stale = [c["name"] for c in CASES
             if not c.get("certification") or c["certification"]["numbers_sha256"] != F.numbers_hash(c)]
    assert not stale, f"cases whose certification is missing or stale: {stale[:10]}; {_regen_hint()}"


def test_every_case_has_a_50_digit_reference():
    missing = {c["name"]: c["certification"].get("no_reference") for c in CASES
               if not (c.get("certification") or {}).get("reference")
               and not certify_ode.is_solver_certified(c["transform"])}
    assert not missing, (f"cases without a 50-digit reference (add FORWARD/INVERSE for the type in "
                         f"validation/reference.py, then regenerate): {missing}")


CHEAP = ["elementwise_affine", "elementwise_affine/small_scales", "logit/near_0", "logit/tiny", "logit_alpha/ends",
         "sigmoid/lower_tail", "leaky_relu/near_zero", "linear/near_singular", "affine_exp_relu", "lu_linear",
         "lu_linear/float32", "radial_2d", "planar_2d/float32", "spline_elementwise_two_bins/at_bound",
         "reshape_image/positions", "actnorm2d_144/float32", "conv1x1_322/near_singular",
         "masked_conv_k1_322/small_diagonal"]          # events of any shape: (N, C, H, W) and a reshape's


def _inputs_only(case):
    c = json.loads(json.dumps(case))
    c.pop("certification")
    c["tolerance"].pop("conditioned", None)
    if c["inverse"]["input"] == c["forward"]["output"]:
        c["inverse"]["input"] = None
    for a, b in generate.EXPECTED_KEYS:
        if (a, b) != ("inverse", "input"):
            c[a][b] = None
    return c


@pytest.mark.parametrize("name", CHEAP)
def test_expected_numbers_are_the_50_digit_reference_bit_for_bit(name):
    """Recomputed from the stored inputs alone, the 50-digit reference rounds to exactly the stored numbers,
    tolerances and certification: nothing in a case depends on the machine that generated it."""
    case = next(c for c in CASES if c["name"] == name)
    fresh = _inputs_only(case)
    fresh["certification"] = certify.certify_case(fresh)
    assert F.dumps(fresh) == F.dumps(case)


def test_a_tampered_number_fails_the_integrity_check_and_the_reference():
    case = json.loads(json.dumps(next(c for c in CASES if c["name"] == "affine_exp_relu")))
    case["forward"]["logdet"][2] *= 1 + 1e-9
    assert F.numbers_hash(case) != case["certification"]["numbers_sha256"]
    fresh = _inputs_only(case)
    certify.certify_case(fresh)
    assert fresh["forward"]["logdet"][2] != case["forward"]["logdet"][2]


def test_conditioned_numbers_state_attainable_and_required_digits():
    """Each ill-conditioned number states its condition number, its attainable digits in the case's dtype
    and the digits the checker requires: the attainable ones less the margin, never above min_digits."""
    n = 0
    for c in CASES:
        md = c["tolerance"]["min_digits"]
        for i in c["tolerance"].get("conditioned", []):
            n += 1
            assert 0.0 <= i["min_digits"] <= md, (c["name"], i)
            assert i["min_digits"] == round(max(0.0, min(md, i["attainable_digits"] - certify.MARGIN)), 1), i
            assert i["attainable_digits"] <= certify.LOW[c["dtype"]], (c["name"], i)   # rounded to 0.1
    assert n > 50


def test_near_singular_inverse_requirement_follows_its_condition_number():
    """W with condition number 1e10: its inverse's outputs have 16 - 10 = 6 attainable digits in float64 or
    fewer (the condition number is componentwise, over W's entries and y), so the case asks for about 2-6,
    not 10, of every implementation, and npflows' LU solve meets it."""
    case = next(c for c in CASES if c["name"] == "linear/near_singular")
    inv = [i for i in case["tolerance"]["conditioned"] if i["quantity"] == "inverse.output"]
    assert inv and all(i["condition"] > 1e6 for i in inv)
    assert 2.0 <= min(i["min_digits"] for i in inv) <= 6.0
    assert check.compare(case, npflows_adapter.run(case)).status == "pass"


def test_logdet_cancelling_sum_of_rounded_terms_enters_the_error_magnitude():
    """A logdet whose terms cancel loses digits to the rounding of the terms, which the condition number in
    the inputs does not see (four saturated tanh log-scales of about +-1.5 summing to -3.75e-4): the error
    magnitude takes the summation condition number sum |term| / |sum| (from the 50-digit reference's own
    terms, 1.6e4 here).  Relative to itself that logdet has only ~12 attainable digits; the checker measures
    a logdet's error absolutely (the denominator is at least 1: the relative error of the determinant), where
    an error of 1.6e4 * 3.75e-4 ulps leaves more than 13, so the case does not list it as conditioned."""
    from validation import reference as R
    case = next(c for c in CASES if c["name"] == "maa_reversed_tanh_scale/large_raw_scale")
    T, P = case["transform"], {k: R.mpf_array(v) for k, v in case["params"].items()}
    x = R.mpf_array(case["forward"]["input"])
    vals = R.forward(T, P, x)[1]
    with R.summand_magnitudes():
        mag = R.forward(T, P, x)[1]
        mag_seq = R.forward({"type": "Sequential", "layers": [T, {"type": "Inverse", "base": T}]},
                            {**{f"0.{k}": v for k, v in P.items()}, **{f"1.{k}": v for k, v in P.items()}}, x)[1]
    ratio = float(mag[3] / abs(vals[3]))
    assert ratio > 1e4
    attainable = -np.log10(2.0 ** -53 * ratio * abs(float(vals[3])) / 1.0)
    assert attainable > 13
    assert [3] not in [i["index"] for i in case["tolerance"].get("conditioned", [])
                       if i["quantity"] == "forward.logdet"]
    assert all(m >= abs(v) for m, v in zip(mag, vals))
    assert float(mag_seq[0]) > float(mag[0])          # a Sequential adds its layers' magnitudes


def test_solver_certified_cases_reproduce_the_exact_flow_to_their_tolerance():
    """ODE solves (no 50-digit reference): the stored numbers against a solve at 1e-13 and autograd on RK4
    carry at least -log10(rtol) - 2 digits (the per-step tolerance, less a global-error growth of up to 100),
    and the two references agree to 10 digits (so they can certify that much)."""
    cases = [c for c in CASES if certify_ode.is_solver_certified(c["transform"])]
    assert cases, "no solver-certified cases"
    for c in cases:
        s = c["certification"]["solver"]
        assert set(s["digits"]) == {q for q, _ in F.quantities(c)}, c["name"]
        T = c["transform"].get("base", c["transform"])         # a CNF, or the Inverse of one
        for q, v in F.quantities(c):
            # the solve's error in a number v is about rtol |v| + atol: relative, -log10(rtol) less
            # log10(1 + atol / (rtol |v|)) digits (0.3 for |v| = 1; 2.9 for a logdet of 1.4e-3)
            small = float(np.min(np.abs(v))) if np.size(v) else 1.0
            loss = np.log10(1.0 + T["atol"] / (T["rtol"] * small)) if small > 0 else np.inf
            assert s["digits"][q] >= -np.log10(T["rtol"]) - 2.0 - max(0.0, loss - np.log10(2.0)), (c["name"], q, s)
        assert s["rk4_vs_tight_digits"] >= 10.0, (c["name"], s)


def test_stored_logdets_agree_with_brute_force_jacobians_of_npflows_forward():
    """Independent of both the reference's and npflows' logdet formulas: each base case's stored logdet
    against slogdet of autograd's Jacobian of npflows' traceable forward (8 digits relative to max(1, |v|)),
    the events flattened (an image's, or a reshape's input and output)."""
    import autograd
    import autograd.numpy as anp

    from validation.describe import build
    bad = []
    for c in CASES:
        if c["variant"] != "base" or certify_ode.is_solver_certified(c["transform"]):
            continue
        b = build(c["transform"])
        P = {k: np.asarray(v) for k, v in c["params"].items()}
        x = np.asarray(c["forward"]["input"])
        N, D = x.shape[0], x[0].size             # events of any shape, flattened (the output's has the same size)
        ctx = np.asarray(c["context"]) if "context" in c else None       # a conditional case's context
        f = lambda flat: anp.reshape(b.forward(P, anp.reshape(flat, x.shape), ctx, xp=anp)[0], (-1,))
        J = autograd.jacobian(f)(x.reshape(-1)).reshape(N, D, N, D)
        stated = [reference.logdet_from_jacobian(c["transform"], J[i, :, i, :]) for i in range(N)]   # an estimate's
        brute = np.array([np.linalg.slogdet(J[i, :, i, :])[1] if s is None else float(s) for i, s in enumerate(stated)])
        err = np.max(np.abs(brute - np.asarray(c["forward"]["logdet"])) / np.maximum(1.0, np.abs(brute)))
        if err > 1e-8:
            bad.append((c["name"], float(err)))
    assert not bad, bad


# --------------------------------------------------------------------------- checker


def test_npflows_adapter_passes_every_case_within_60_seconds():
    lines = []
    t0 = time.perf_counter()
    res = check.check(npflows_adapter, CASES, out=lines.append)
    dt = time.perf_counter() - t0
    bad = [l for l, r in zip(lines[1:], res) if r.status != "pass"]
    assert not bad, "\n".join(bad)
    assert len(res) == len(CASES) and any(l.startswith(f"summary: npflows: {len(CASES)} cases") for l in lines)
    assert dt < 60.0


class _Broken:
    """npflows with one classic bug."""
    NAME = "broken"

    def __init__(self, bug):
        self.bug = bug

    def supports(self, case):
        return None

    def run(self, case):
        if self.bug == "no_logdet_path":          # backward without the dlogdet cotangent
            case = json.loads(json.dumps(case))
            case["pullback"]["dlogdet"] = [0.0] * len(case["pullback"]["dlogdet"])
        out = npflows_adapter.run(case)
        if self.bug == "inverse_logdet_sign":
            out["inverse.logdet"] = -out["inverse.logdet"]
        if self.bug == "one_ulp_times_1e7":
            y = out["forward.output"].copy()
            y[1, -1] *= 1 + 1e-9
            out["forward.output"] = y
        if self.bug == "float32_internals":
            out = {k: np.asarray(v, np.float32) for k, v in out.items()}
        return out


@pytest.mark.parametrize("bug,quantity", [("no_logdet_path", "pullback."), ("inverse_logdet_sign", "inverse.logdet"),
                                          ("one_ulp_times_1e7", "forward.output"),
                                          ("float32_internals", "forward.output")])
def test_checker_catches_wrong_implementations(bug, quantity):
    cases = [c for c in CASES if c["name"] in ("affine_exp_relu", "lu_linear", "maa_gated")]
    res = check.check(_Broken(bug), cases, out=lambda s: None)
    assert [r.status for r in res] == ["FAIL"] * 3, [(r.name, r.status, r.first) for r in res]
    assert all(r.first.startswith(quantity) for r in res), [r.first for r in res]


def test_checker_fails_half_answers_and_counts_declared_quantities():
    """A case passes only when every quantity is computed or declared unavailable: an adapter that returns
    forward outputs only fails; one that declares the rest (with a reason) passes, and the coverage summary
    says what was declared."""
    from validation.adapters import Unavailable
    fwd = lambda case: {k: v for k, v in npflows_adapter.run(case).items() if k.startswith("forward")}

    class Partial:
        NAME = "partial"
        supports = staticmethod(lambda case: None if case["family"] == "elementwise" else "only elementwise")
        run = staticmethod(fwd)

    class Declaring(Partial):
        NAME = "declaring"
        run = staticmethod(lambda case: {**fwd(case), "inverse": Unavailable("no inverse here"),
                                         "pullback": Unavailable("no gradients here")})
    cases = [c for c in CASES if c["name"] in ("sigmoid", "linear")]
    lines = []
    res = check.check(Partial(), cases, out=lines.append)
    assert sorted(r.status for r in res) == ["FAIL", "skip"]
    done = next(r for r in res if r.status == "FAIL")
    assert "inverse.output" in done.not_computed and "pullback.dx" in done.not_computed
    assert any(l.strip().startswith("inverse outputs") and l.split()[-4] == "1" for l in lines), lines[-6:]
    lines = []
    res = check.check(Declaring(), cases, out=lines.append)
    assert sorted(r.status for r in res) == ["pass", "skip"]
    done = next(r for r in res if r.status == "pass")
    assert done.declared["inverse.output"] == "no inverse here" and not done.not_computed
    assert any(l.strip().startswith("parameter pullbacks") for l in lines)


def test_command_line_check_of_a_forward_only_adapter_exits_1(tmp_path):
    adapter = tmp_path / "forward_only.py"
    adapter.write_text("from validation.adapters import npflows_adapter\nNAME = 'forward only'\n"
                       "supports = npflows_adapter.supports\n"
                       "def run(case):\n"
                       "    return {k: v for k, v in npflows_adapter.run(case).items() if k.startswith('forward')}\n")
    out = subprocess.run([sys.executable, "-m", "validation", "check", str(adapter), "--cases", "logit"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr
    assert "not computed and not declared unavailable" in out.stdout
    assert re.search(r"inverse outputs\s+0 /\s+0 /\s+\d+", out.stdout), out.stdout[-800:]


def test_command_line_check_prints_table_and_summary():
    out = subprocess.run([sys.executable, "-m", "validation", "check", "npflows", "--cases", "logit"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "logit/near_0" in out.stdout and "\nsummary: npflows" in out.stdout
    assert out.stdout.strip().splitlines()[-1].strip().startswith("parameter pullbacks")     # the coverage


# --------------------------------------------------------------------------- documentation, independence


def _types(T):
    """Every type in a description, nested ones included (a Sequential's layers, an Inverse's base, a
    MultiScale's stages: any value that is a description or a list of them)."""
    nested = [v for v in T.values() if isinstance(v, dict) and "type" in v]
    nested += [e for v in T.values() if isinstance(v, list) for e in v if isinstance(e, dict) and "type" in e]
    return {T["type"]}.union(*(_types(L) for L in nested))


def test_readme_documents_every_transform_type():
    documented = set(re.findall(r"^### `(\w+)`", README, re.M))
    used = set().union(*(_types(c["transform"]) for c in CASES))
    missing = sorted(used - documented)
    assert not missing, f"validation/README.md has no '### `<type>`' section with the formulas of: {missing}"


def test_readme_worked_example_runs_without_npflows():
    code = README.split("<!-- worked-example -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert "npflows" not in code
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "forward logdet" in out.stdout


def test_readme_summary_matches_the_cases():
    text = " ".join(report.summary_text(CASES).split())
    assert text in " ".join(README.split()), f"rerun `python -m validation report` and update README: {text}"


def test_npflows_carries_13_digits_on_almost_every_float64_number():
    """npflows checked like any other implementation: at least 98% of the float64 numbers that have 13 or
    more attainable digits agree to 13 digits (the README gives the measured figures), and no number loses
    more than its conditioning explains (the report's kind ``npflows``: 1.5 digits below a listed number's
    attainable digits, or below 13 for an unlisted one), except the known finding below."""
    # Finding (validation/README.md, npflows): in the steep_end_derivative regime (bin slope 1e-3, end
    # derivative 234) a few spline pullbacks lose 1.6-1.9 digits beyond their attainable ones (10.3 of 11.9-12.2);
    # they still pass the checker's requirement (attainable - 2).
    known = {("spline_coupling_half_2d/steep_end_derivative", "pullback.dparams[net.W2]"),
             ("spline_elementwise_bins_and_tails/steep_end_derivative", "pullback.dx"),
             ("cond_autoregressive_spline/steep_end_derivative", "pullback.dx")}     # 10.8 of 12.5
    agreement = report.npflows_agreement([c for c in CASES if c["dtype"] == "float64"])
    n = ok = 0
    worse = []
    for name, qs in agreement.items():
        for q, (d, att) in qs.items():
            well = att >= 13
            n += int(well.sum())
            ok += int((d[well] >= 13).sum())
            for i in zip(*np.nonzero(d < 13)):
                if report.kind_of(float(d[i]), float(att[i])) == "npflows":
                    worse.append((name, q, i, float(d[i]), float(att[i])))
    assert ok >= 0.98 * n, f"{ok} of {n}"
    assert all((w[0], w[1]) in known and w[3] >= w[4] - 2.0 for w in worse), worse[:10]


def test_reference_does_not_use_npflows_and_npflows_does_not_use_validation_tools():
    assert "npflows" not in (ROOT / "validation" / "reference.py").read_text().replace("calls npflows", "")
    for path in (ROOT / "npflows").rglob("*.py"):
        text = path.read_text()
        for mod in ("autograd", "torch", "mpmath", "validation"):
            assert not re.search(rf"^\s*(import|from)\s+{mod}\b", text, re.M), f"{path} imports {mod}"


# --------------------------------------------------------------------------- peers (with the `peers` extra)


@pytest.mark.parametrize("adapter,names", [
    ("nflows", ["actnorm", "affine_sigmoid_tanh", "additive_half", "lu_linear", "spline_coupling_half_2d",
                "spline_elementwise_bins"]),
    ("zuko", ["affine_exp_relu", "affine_tanh_leaky", "affine_softplus_elu", "maa_gated", "lu_linear",
              "spline_coupling_half_2d", "spline_autoregressive_natural"]),
])
def test_peer_adapters_reproduce_the_cases_they_map(adapter, names):
    pytest.importorskip("torch")
    pytest.importorskip(adapter)
    cases = [c for c in CASES if c["entry"] in names and c["variant"] in ("base", "float32")]
    res = check.check(check.load_adapter(adapter), cases, out=lambda s: None)
    assert len(res) == 2 * len(names)
    assert all(r.status == "pass" for r in res), [(r.name, r.status, r.first) for r in res if r.status != "pass"]


@pytest.mark.parametrize("adapter", ["torchdiffeq", "torchdiffeq_backprop"])
def test_torchdiffeq_reproduces_the_cnf_cases(adapter):
    """Every CNF case (float64 and float32) through torchdiffeq, pullbacks by its adjoint method and by
    backpropagation through its solver: each passes the cases' own tolerance (5 digits float64, 4 float32)."""
    pytest.importorskip("torch")
    pytest.importorskip("torchdiffeq")
    cases = [c for c in CASES if c["transform"]["type"] == "CNF" and "context" not in c]   # conditional: test_validation_context
    res = check.check(check.load_adapter(adapter), cases, out=lambda s: None)
    assert len(res) == 6
    assert all(r.status == "pass" for r in res), [(r.name, r.status, r.first) for r in res if r.status != "pass"]


def test_torchdiffeq_agrees_with_npflows_tight_solve_beyond_the_cases_tolerance():
    """The float64 CNF cases carry 6.3-8 digits (their rtol = atol = 1e-8).  npflows solved tightly (the
    certification's DOP853 at 1e-13, its hand-derived adjoint for the pullbacks) and torchdiffeq at 1e-12
    (torch autograd's second derivatives in torchdiffeq's adjoint) agree to 9 digits or more relative to each
    quantity's largest magnitude (measured 10.5-15), so the checker's 6.3-8 digits are the cases' accuracy,
    not a disagreement."""
    pytest.importorskip("torch")
    pytest.importorskip("torchdiffeq")
    from validation.adapters import arrays, torchdiffeq_adapter
    from validation.describe import build
    for case in [c for c in CASES if c["transform"]["type"] == "CNF" and c["dtype"] == "float64" and "context" not in c]:
        b, c = build({**case["transform"], **certify_ode.TIGHT}), arrays(case)
        y, ld, cache = b.forward(c.params, c.x)
        xi, ldi = b.inverse(c.params, c.y)
        dx, grads = b.backward(c.params, c.dy, c.dlogdet, cache)
        ref = {"forward.output": y, "forward.logdet": ld, "inverse.output": xi, "inverse.logdet": ldi,
               "pullback.dx": dx, **{f"pullback.dparams[{k}]": v for k, v in grads.items()}}
        got = torchdiffeq_adapter.run(case)
        assert set(got) == set(ref)
        for name, r in ref.items():
            scale = max(float(np.max(np.abs(r))), 1.0)
            err = float(np.max(np.abs(np.asarray(got[name]) - r)))
            assert err <= 1e-9 * scale, f"{case['name']} {name}: {err:.2g} > 1e-9 * {scale:.3g}"


def test_peers_command_prints_the_readme_table_rows():
    from validation.peers import run_peers
    printed = []
    cases = [c for c in CASES if c["entry"] in ("sigmoid", "linear")]
    table = run_peers(cases, ["npflows"], out=printed.append)
    row = next(line for line in table if line.startswith("| npflows |"))
    assert f"| {len(cases)} | 0 | 0 | 0 | 0 |" in row, row           # pass, fail, differ, error, skipped
    assert any(line.startswith("summary: npflows") for line in printed)
