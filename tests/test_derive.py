"""Readable derivations (npflows/derive.py): every documented layer's Notes print as Unicode text."""
import subprocess
import sys

import pytest

from npflows.derive import derivation, documented_names, latex_to_text


@pytest.mark.parametrize("name", documented_names() + ["MLP.backward"])
def test_every_derivation_prints_without_raw_markup(name):
    text = derivation(name)
    assert "Notes" in text and len(text) > 50
    assert ":math:" not in text and ".. math::" not in text and "\\" not in text, \
        [line for line in text.splitlines() if "\\" in line or ":math:" in line][:3]


def test_latex_becomes_unicode():
    assert latex_to_text(r"\bar x = \bar y\odot e^{s}") == "x\u0304 = y\u0304\u2299 e\u02e2"   # x̄ = ȳ⊙ eˢ
    assert latex_to_text(r"\log|\det J| = \sum_d s_d") == "log|det J| = Σ_d s_d"    # no Unicode subscript d
    assert latex_to_text(r"\sum_{j} s_{j}") == "Σⱼ sⱼ"
    assert latex_to_text(r"\frac{a + b}{2}") == "(a + b)/2"
    assert latex_to_text(r"\begin{pmatrix} I & 0 \\ \ast & D\end{pmatrix}") == "[I, 0; ∗, D]"
    assert latex_to_text(r"W^{-1}") == "W⁻¹" and latex_to_text(r"x^T") == "xᵀ"


def test_the_command_line_prints_a_layer_and_lists_the_rest():
    out = subprocess.run([sys.executable, "-m", "npflows.derive", "AffineCoupling"], capture_output=True, text=True,
                         check=True).stdout
    assert "x\u0304\u2082 = y\u0304\u2082 \u2299 e\u02e2" in out and "J = [I, 0; ∗, diag(eˢ)]" in out
    listed = subprocess.run([sys.executable, "-m", "npflows.derive", "--list"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "Radial" in listed and "CNF" in listed
    bad = subprocess.run([sys.executable, "-m", "npflows.derive", "NoSuchLayer"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no documented object 'NoSuchLayer'" in bad.stderr
