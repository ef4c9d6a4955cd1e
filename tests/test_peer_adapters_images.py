"""The nflows and normflows adapters on the image cases (skipped without torch and the library:
``pip install -e ".[peers]"``): the cases each maps pass, the ones it cannot map are skipped with the reason,
normflows' Glow steps really run through its ``GlowBlock``, and nflows' ``MultiscaleCompositeTransform`` (which
no golden case maps: their multi-scale stages hold layers nflows lacks) reproduces an npflows ``MultiScale``.

``python -m validation check nflows --cases <name>`` / ``... normflows ...`` runs any of them by hand; the
peers table in validation/README.md counts them all.
"""
import numpy as np
import pytest

from test_peer_adapters import _assert_all_pass, _cases, _check

pytest.importorskip("torch")

NFLOWS = ["squeeze_channel_major", "actnorm2d_233", "actnorm2d_144", "conv1x1_lu_233", "conv1x1_lu_322",
          "image_additive_channel_second_1x1", "image_affine_channel_second_nflows"]
NFLOWS_VARIANTS = ("base", "float32", "positions", "large_scales", "small_scales", "large_shift", "large_raw_scale")


def test_nflows_reproduces_the_image_cases_it_maps():
    """``conv1x1_lu_322`` has Glow's signs ``[1, -1, -1]``, which nflows' positive diagonal takes only through
    the negated channels (module docstring); ``squeeze_channel_major/positions`` shows where every entry goes."""
    pytest.importorskip("nflows")
    cases = _cases(NFLOWS, NFLOWS_VARIANTS)
    assert any(c["name"] == "squeeze_channel_major/positions" for c in cases)
    _assert_all_pass(_check("nflows", cases), len(cases))


def test_nflows_skips_the_image_cases_it_cannot_map_with_a_reason():
    pytest.importorskip("nflows")
    from validation.adapters import nflows_adapter as A
    for entry, words in [("conv1x1_233", "dense"), ("squeeze_checkerboard", "one order"),
                         ("squeeze_space_to_depth", "one order"), ("conv1x1_lu_322/near_singular", "1e-3"),
                         ("conv1x1_lu_233/large_small_scales", "1e-3"), ("multiscale_three_stages", "factor_out"),
                         ("masked_conv_k3_233", "masked convolution"), ("reshape_image", "only Reshape"),
                         ("glow_step_plain_323", "dense"), ("image_additive_checkerboard", "1-D mask"),
                         ("image_affine_channel_glow", "sigmoid(r + 2) + 1e-3"),
                         ("image_affine_channel_neg_logsigmoid", "sigmoid(r + 2) + 1e-3"),
                         ("image_affine_checkerboard_exp", "1-D mask"), ("multiscale_two_stages_first", "scale='exp'"),
                         ("glow_tiny_lu", "factor_out"), ("glow_tiny_dense_vector_input", "dense")]:
        name, _, variant = entry.partition("/")
        reason = A.supports(_cases([name], (variant or "base",))[0])
        assert reason and words in reason, (entry, reason)


NORMFLOWS = ["squeeze_channel_major", "actnorm2d_233", "conv1x1_233", "conv1x1_322", "conv1x1_144", "conv1x1_lu_233",
             "conv1x1_lu_322", "image_additive_channel_second_1x1", "image_additive_checkerboard",
             "image_affine_channel_glow", "image_affine_channel_neg_logsigmoid", "image_affine_channel_exp_5x5",
             "image_affine_checkerboard_exp", "glow_step_lu_422", "glow_step_plain_323", "multiscale_two_stages_first",
             "glow_tiny_lu", "glow_tiny_dense_vector_input"]


def test_normflows_reproduces_the_image_cases_it_maps():
    """Every variant of these, the near-singular 1x1 convolutions included: normflows' forward inverts ``W``
    explicitly (``torch.inverse``), and the cases' conditioned tolerances still hold for it.  ``glow_tiny_*`` are
    whole two-level Glows: ``MultiscaleFlow`` with a ``GlowBlock`` and a ``Squeeze`` per level."""
    pytest.importorskip("normflows")
    cases = _cases(NORMFLOWS, ("base", "float32", "positions", "large_scales", "small_scales", "near_singular",
                               "large_small_scales", "large_shift", "large_raw_scale"))
    assert sum(c["variant"] == "near_singular" for c in cases) == 4
    _assert_all_pass(_check("normflows", cases), len(cases))


def test_normflows_skips_the_image_cases_it_cannot_map_with_a_reason():
    pytest.importorskip("normflows")
    from validation.adapters import normflows_adapter as A
    for entry, words in [("squeeze_checkerboard", "one order"), ("squeeze_space_to_depth", "one order"),
                         ("multiscale_three_stages", "one order"), ("masked_conv_k5_144", "masked convolution"),
                         ("glow_like_conv_step", "masked convolution"), ("reshape_flatten", "only Reshape"),
                         ("image_affine_checkerboard_odd_tanh_1x1", "only the exp scale"),
                         ("image_affine_channel_second_nflows", "scale='sigmoid'"),
                         ("image_affine_checkerboard_softplus_interleaved", "only the exp scale")]:
        name, _, variant = entry.partition("/")
        reason = A.supports(_cases([name], (variant or "base",))[0])
        assert reason and words in reason, (entry, reason)


# --- cases built here, with npflows' own numbers as the expected values -------------------------------------
# For maps no golden case covers.  These compare two independent float64 implementations (npflows' hand-written
# forward, inverse and backward; the peer's torch code and autograd) on well-conditioned inputs, where both
# agree to ~1e-13; the checker's usual float64 requirement of 10 digits is asked.

def _npflows_case(b, rng, n=3, scale=0.3):
    """A case dict of the format for bijector ``b`` (parameters perturbed), expected numbers from npflows."""
    from registry import perturbed
    from validation.generate import TOLERANCE, Spec, make_case
    from validation.format import to_json_array
    x = rng.standard_normal((n,) + b.event_shape)
    p = perturbed(b, rng, scale, x=x)
    c = make_case(Spec("adhoc", "base", "built in the test", lambda: (b, p, x, None)))
    y, ld, cache = b.forward(p, x)
    xi, ldi = b.inverse(p, y)
    dy, dl = np.asarray(c["pullback"]["dy"]), np.asarray(c["pullback"]["dlogdet"])
    dx, g = b.backward(p, dy, dl, cache)
    c["forward"].update(output=to_json_array(y), logdet=to_json_array(ld))
    c["inverse"].update(input=to_json_array(y), output=to_json_array(xi), logdet=to_json_array(ldi))
    c["pullback"].update(dx=to_json_array(dx), dparams={k: to_json_array(g[k]) for k in p})
    c["tolerance"] = dict(TOLERANCE["float64"])
    return c


def _two_stages(factor_out="first", **coupling):
    """(1, 4, 4): squeeze -> ActNorm2d -> LU 1x1 conv (a sign -1) -> a channel coupling (``coupling``), 2 channels
    factored out; then an additive channel coupling and an ActNorm2d on the kept (2, 2, 2)."""
    import npflows as nf
    from npflows.bijectors.image_coupling import ImageAdditiveCoupling, ImageAffineCoupling
    from npflows.bijectors.multiscale import MultiScale
    from npflows.bijectors.reshape import Squeeze
    s0 = nf.Sequential([Squeeze((1, 4, 4)), nf.ActNorm2d((4, 2, 2)),
                        nf.LUInvertible1x1Conv((4, 2, 2), perm=[2, 0, 3, 1], sign=[1, -1, 1, 1]),
                        ImageAffineCoupling((4, 2, 2), mask="channel", hidden=3, **coupling)])
    s1 = nf.Sequential([ImageAdditiveCoupling((2, 2, 2), mask="channel", parity=1, hidden=3),
                        nf.ActNorm2d((2, 2, 2))])
    return MultiScale([s0, s1], factor_out=factor_out)


def test_nflows_multiscale_composite_transform_reproduces_npflows_multiscale():
    pytest.importorskip("nflows")
    case = _npflows_case(_two_stages(scale="sigmoid", layout="shift_scale"), np.random.default_rng(1))
    from validation.adapters import nflows_adapter as A
    assert A.supports(case) is None
    _assert_all_pass(_check("nflows", [case]), 1)
    case["transform"]["factor_out"] = "second"
    assert "factor_out" in A.supports(case)


def test_normflows_multiscale_flow_reproduces_npflows_multiscale_both_splits():
    """normflows' ``MultiscaleFlow`` with ``Merge("channel_inv")`` is ``factor_out="first"`` (any C), with
    ``Merge("channel")`` ``"second"`` (even C)."""
    pytest.importorskip("normflows")
    for fo in ("first", "second"):
        b = _two_stages(fo, scale="neg_logsigmoid", layout="interleaved")        # normflows' "sigmoid" map
        case = _npflows_case(b, np.random.default_rng(2))
        _assert_all_pass(_check("normflows", [case]), 1)


def test_normflows_merge_keeps_ceil_half_so_odd_channels_with_factor_out_second_are_refused():
    """normflows' ``Merge("channel")`` (``torch.chunk``) goes on with the first ``ceil(C/2)`` channels, openai
    Glow's ``split2d`` and npflows' ``factor_out="second"`` with the first ``floor(C/2)``: equal for even C only."""
    pytest.importorskip("normflows")
    import torch
    from normflows.flows import Merge
    (kept, out), _ = Merge("channel").inverse(torch.zeros(1, 3, 2, 2))
    assert kept.shape[1] == 2 and out.shape[1] == 1          # C = 3: keeps 2 = ceil(3/2)
    import npflows as nf
    from npflows.bijectors.multiscale import MultiScale
    b = MultiScale([nf.ActNorm2d((3, 2, 2)), nf.ActNorm2d((1, 2, 2))], factor_out="second")
    case = _npflows_case(b, np.random.default_rng(3))
    from validation.adapters import normflows_adapter as A
    assert "odd C" in A.supports(case)
    b = MultiScale([nf.ActNorm2d((3, 2, 2)), nf.ActNorm2d((1, 2, 2))], factor_out="first")
    _assert_all_pass(_check("normflows", [_npflows_case(b, np.random.default_rng(3))]), 1)


def test_normflows_glow_steps_run_through_its_glow_block(monkeypatch):
    """A Glow step (ActNorm2d -> 1x1 conv -> Glow's coupling, shift first) in a ``Sequential`` is computed by
    ``normflows.flows.GlowBlock``'s ``inverse`` (and its inverse by the block's ``forward``), with the block's
    ActNorm run backwards (``t = -shift * exp(-log_scale)``), for the LU and the dense weight and the three scale
    maps; a step with ``shift_first=False`` is not a GlowBlock and goes through the parts."""
    pytest.importorskip("normflows")
    import npflows as nf
    from normflows.flows import GlowBlock
    from npflows.bijectors.image_coupling import ImageAffineCoupling
    calls = []
    for name in ("forward", "inverse"):
        orig = getattr(GlowBlock, name)
        monkeypatch.setattr(GlowBlock, name, lambda self, z, _o=orig, _n=name: calls.append(_n) or _o(self, z))
    for lu, scale, first in [(True, "logsigmoid", True), (False, "neg_logsigmoid", True), (True, "exp", True),
                             (False, "exp", False)]:
        conv = (nf.LUInvertible1x1Conv((4, 2, 3), perm=[1, 3, 0, 2], sign=[1, -1, -1, 1]) if lu
                else nf.Invertible1x1Conv((4, 2, 3)))
        b = nf.Sequential([nf.ActNorm2d((4, 2, 3)), conv,
                           ImageAffineCoupling((4, 2, 3), mask="channel", hidden=3, scale=scale,
                                               layout="interleaved", shift_first=first)])
        calls.clear()
        _assert_all_pass(_check("normflows", [_npflows_case(b, np.random.default_rng(4), scale=0.25)]), 1)
        assert calls == (["inverse", "forward"] if first else []), (lu, scale, first, calls)
