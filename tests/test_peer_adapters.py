"""The normflows and flowjax adapters reproduce the golden cases they map (skipped without the library:
``pip install -e ".[peers]"`` for normflows, ``".[jax]"`` for flowjax).

A few cases per adapter keep this fast; ``python -m validation check normflows`` / ``... flowjax`` runs them
all (validation/README.md, "Peers").
"""
import json
from pathlib import Path

import pytest

CASES_DIR = Path(__file__).resolve().parent.parent / "validation" / "cases"


def _cases(entries, variants=("base", "float32")):
    out = []
    for e in entries:
        out += [c for c in json.loads((CASES_DIR / f"{e}.json").read_text())["cases"] if c["variant"] in variants]
    return out


def _check(adapter, cases):
    from validation import check
    return check.check(check.load_adapter(adapter), cases, out=lambda s: None)


def _assert_all_pass(res, n):
    assert len(res) == n
    assert all(r.status == "pass" for r in res), [(r.name, r.status, r.first) for r in res if r.status != "pass"]


NORMFLOWS = ["actnorm", "nice_scaling", "permutation_random", "lu_linear", "linear", "affine_exp_relu",
             "affine_logsigmoid_half", "affine_neg_logsigmoid_half_second", "additive_alternating_tanh",
             "maa_random_order_sigmoid_scale_elu", "planar_2d", "radial_beta_near_minus_alpha",
             "radial_abs_negative_alpha_3d",
             "spline_coupling_half_2d"]


def test_normflows_reproduces_the_cases_it_maps():
    pytest.importorskip("torch")
    pytest.importorskip("normflows")
    res = _check("normflows", _cases(NORMFLOWS))
    _assert_all_pass(res, 2 * len(NORMFLOWS))
    planar = [r for r in res if r.name.startswith(("planar", "radial"))]
    assert planar and all("inverse.output" in r.declared and "inverse.logdet" in r.declared for r in planar)


def test_normflows_skips_what_it_cannot_map_with_a_reason():
    pytest.importorskip("torch")
    pytest.importorskip("normflows")
    from validation.adapters import normflows_adapter as A
    for entry, words in [("affine_softclip_zuko", "softclip"), ("maa_gated", "gated"), ("logit", "Logit"),
                         ("lu_linear/near_singular", "1e-3")]:
        name, _, variant = entry.partition("/")
        case = _cases([name], (variant or "base",))[0]
        reason = A.supports(case)
        assert reason and words in reason, (entry, reason)


FLOWJAX = ["affine_softclip_zuko", "maa_gated_random_order", "planar_leaky_slope05_2d", "planar_1d"]


def test_flowjax_reproduces_the_cases_it_maps():
    """One base case each (flowjax compiles every case's map and VJP: about a second each): zuko's soft-clipped
    coupling on a non-contiguous mask, a gated MAF layer in a random order, the leaky planar flow with its closed-form inverse, and the
    tanh planar flow, whose inverse flowjax does not have (declared unavailable)."""
    pytest.importorskip("flowjax")
    res = _check("flowjax", _cases(FLOWJAX, ("base",)))
    _assert_all_pass(res, len(FLOWJAX))
    declared = {r.name: set(r.declared) for r in res}
    assert declared["planar_1d"] >= {"inverse.output", "inverse.logdet"}
    assert not any(declared[n] for n in FLOWJAX[:3])
