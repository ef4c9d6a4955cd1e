"""Print a layer's derivation as readable text: ``python -m npflows.derive AffineCoupling``.

The derivations live in the docstrings' Notes, written in reStructuredText with LaTeX math, which is what
Sphinx renders but hard to read raw (``:math:`\\bar x = \\bar y\\odot e^{s}```).  This prints the summary and
the Notes of a class or method with the math turned into Unicode (``x̄ = ȳ ⊙ eˢ``), in a terminal, with
nothing to install.  A student reads the derivation beside the code it explains, without a documentation
build; the LaTeX stays in the source because it is the form that renders best where a renderer exists.

Usage::

    python -m npflows.derive AffineCoupling        # a bijector (any name in npflows or npflows.nn)
    python -m npflows.derive MLP.backward          # a method
    python -m npflows.derive --list                # every documented name
"""
import argparse
import inspect
import re
import sys

GREEK = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε", "zeta": "ζ",
         "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "pi": "π",
         "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω",
         "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ", "Pi": "Π", "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ",
         "Omega": "Ω", "ell": "ℓ"}
SYMBOLS = {"odot": "⊙", "cdot": "·", "times": "×", "sum": "Σ", "prod": "∏", "partial": "∂", "nabla": "∇",
           "infty": "∞", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "ne": "≠", "neq": "≠", "approx": "≈",
           "to": "→", "mapsto": "↦", "rightarrow": "→", "in": "∈", "lVert": "‖", "rVert": "‖", "|": "‖", "pm": "±",
           "int": "∫", "dots": "…", "ldots": "…", "cdots": "⋯", "circ": "∘", "sim": "∼", "propto": "∝",
           "mid": "|", "lvert": "|", "rvert": "|", "langle": "⟨", "rangle": "⟩", "top": "ᵀ", "equiv": "≡",
           "ast": "∗", "star": "⋆", "quad": "  ", "qquad": "    ", ",": " ", ";": " ", ":": " ", "!": "",
           "left": "", "right": "", "big": "", "Big": "", "bigl": "", "bigr": "", "Bigl": "", "Bigr": "",
           "log": "log", "exp": "exp", "det": "det", "tanh": "tanh", "cosh": "cosh", "sinh": "sinh", "min": "min",
           "max": "max", "sign": "sign", "tr": "tr", "diag": "diag"}
FUNCTIONS = {"log", "exp", "det", "tanh", "cosh", "sinh", "min", "max", "sign", "tr", "diag"}
SUPER = str.maketrans("0123456789+-=()nTtiksx", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿᵀᵗⁱᵏˢˣ")
SUB = str.maketrans("0123456789+-=()aeoxijklmnpstuvr", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₒₓᵢⱼₖₗₘₙₚₛₜᵤᵥᵣ")
FONTS = {"mathcal": {"N": "𝒩", "L": "ℒ", "O": "𝒪"}, "mathbb": {"E": "𝔼", "R": "ℝ", "1": "𝟙"},
         "mathbf": {"1": "𝟏", "a": "𝐚", "x": "𝐱", "z": "𝐳"}}


def _group(s, i):
    """``(content, end)`` of the argument at ``s[i]``: a ``{...}`` group (nested braces allowed) or one
    character (or one ``\\command``)."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return "", i
    if s[i] == "{":
        depth, j = 0, i
        while j < len(s):
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                return s[i + 1:j], j + 1
            j += 1
        return s[i + 1:], len(s)
    if s[i] == "\\":
        m = re.match(r"\\([A-Za-z]+|.)", s[i:])
        return m.group(0), i + len(m.group(0))
    return s[i], i + 1


def _script(text, table):
    """``text`` in super- or subscript characters where every character has one, else ``^(text)`` style."""
    out = text.translate(table)
    if all(c != o or c in " " for c, o in zip(text, out)) or len(text) == 0:
        return out
    return None


def latex_to_text(s):
    """LaTeX math ``s`` as Unicode text (a readable approximation, not a typesetter)."""
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            m = re.match(r"\\([A-Za-z]+|.)", s[i:])
            name, i = m.group(1), i + len(m.group(0))
            if name in ("frac", "tfrac", "dfrac"):
                num, i = _group(s, i)
                den, i = _group(s, i)
                num, den = latex_to_text(num), latex_to_text(den)
                wrap = (lambda t: t if re.fullmatch(r"[\w.ᵀ′]+|[^\s+\-]+", t) else f"({t})")
                out.append(f"{wrap(num)}/{wrap(den)}")
            elif name == "sqrt":
                arg, i = _group(s, i)
                arg = latex_to_text(arg)
                out.append("√" + (arg if len(arg) == 1 else f"({arg})"))
            elif name in ("bar", "overline", "hat", "tilde", "dot"):
                arg, i = _group(s, i)
                mark = {"bar": "\u0304", "overline": "\u0304", "hat": "\u0302", "tilde": "\u0303", "dot": "\u0307"}[name]
                arg = latex_to_text(arg)
                out.append("".join(ch + mark for ch in arg) if len(arg) <= 2 else f"({arg}){mark}")
            elif name in ("mathrm", "operatorname", "text", "mathit", "textrm", "mbox", "mathrel", "mathop"):
                arg, i = _group(s, i)
                out.append(latex_to_text(arg))
            elif name in FONTS:
                arg, i = _group(s, i)
                out.append(FONTS[name].get(arg, latex_to_text(arg)))
            elif name == "begin":
                env, i = _group(s, i)
                end = s.find("\\end{" + env + "}", i)
                body = s[i:end if end >= 0 else len(s)]
                i = (end + len(env) + 6) if end >= 0 else len(s)
                rows = [r for r in re.split(r"\\\\", body) if r.strip()]
                out.append("[" + "; ".join(", ".join(latex_to_text(c).strip() for c in r.split("&")) for r in rows)
                           + "]")
            elif name in GREEK:
                out.append(GREEK[name])
            elif name in SYMBOLS:
                if name in FUNCTIONS and out and out[-1][-1:].isalnum():
                    out.append(" ")        # D\log q -> "D log q"
                out.append(SYMBOLS[name])
                if name in FUNCTIONS and i < len(s) and (s[i] == "\\" or s[i].isalnum()):
                    out.append(" ")        # \log\sigma(u) -> "log σ(u)", not "logσ(u)"
            else:
                out.append(name)           # an unknown command: its name, readable
        elif c in "^_":
            arg, i = _group(s, i + 1)
            text = latex_to_text(arg)
            conv = _script(text, SUPER if c == "^" else SUB)
            mark = c if len(text) == 1 else c + "("
            out.append(conv if conv is not None else mark + text + ("" if len(text) == 1 else ")"))
        elif c in "{}":
            i += 1
        else:
            out.append(c)
            i += 1
    return re.sub(r"[ ]{2,}", " ", "".join(out))


def rst_to_text(doc):
    """A numpydoc docstring with ``:math:`` roles and ``.. math::`` blocks rendered as Unicode text."""
    doc = re.sub(r":math:`([^`]*)`", lambda m: latex_to_text(m.group(1)), doc)
    lines, out, i = doc.split("\n"), [], 0
    while i < len(lines):
        m = re.match(r"(\s*)\.\. math::\s*(.*)", lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, body = m.group(1), [m.group(2)]
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i].strip())
            i += 1
        out.append(indent + "    " + latex_to_text(" ".join(b for b in body if b)))
        out.append("")
    text = "\n".join(out)
    text = re.sub(r"\\([A-Za-z]+)", lambda m: latex_to_text(m.group(0)), text)   # a command outside :math:
    text = re.sub(r":(?:class|func|meth|data|attr|mod):`~?([^`]*)`", r"\1", text)
    return text.replace("``", "")


def _notes(doc):
    """The summary paragraph and the Notes section of a numpydoc docstring (the whole text if it has none)."""
    summary = doc.split("\n\n", 1)[0]
    m = re.search(r"^Notes\n-----\n(.*?)(?=^\w[\w ]*\n-{3,}\n|\Z)", doc, flags=re.S | re.M)
    return summary + ("\n\nNotes\n-----\n" + m.group(1).rstrip() if m else "\n\n" + doc.split("\n\n", 1)[-1])


def lookup(name):
    """The object called ``name`` (``AffineCoupling``, ``MLP.backward``) in npflows or npflows.nn."""
    import npflows
    head, *rest = name.split(".")
    obj = getattr(npflows, head, None) or getattr(npflows.nn, head, None)
    for attr in rest:
        obj = getattr(obj, attr, None)
    if obj is None or not inspect.getdoc(obj):
        raise ValueError(f"npflows.derive: no documented object {name!r}; try --list")
    return obj


def documented_names():
    """Every class in npflows and npflows.nn whose docstring has a Notes section (the derivations)."""
    import npflows
    names = set()
    for mod in (npflows, npflows.nn):
        for n in dir(mod):
            obj = getattr(mod, n)
            if inspect.isclass(obj) and "Notes\n-----" in (inspect.getdoc(obj) or ""):
                names.add(n)
    return sorted(names)


def derivation(name):
    """The readable derivation of ``name``: its summary and Notes, math in Unicode."""
    return rst_to_text(_notes(inspect.getdoc(lookup(name))))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Example: python -m npflows.derive AffineCoupling")
    ap.add_argument("name", nargs="?", help="a class or Class.method of npflows, e.g. Radial or MLP.backward")
    ap.add_argument("--list", action="store_true", help="list the classes whose docstrings hold a derivation")
    args = ap.parse_args(argv)
    if args.list or not args.name:
        print("\n".join(documented_names()))
        return 0
    try:
        print(derivation(args.name))
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
