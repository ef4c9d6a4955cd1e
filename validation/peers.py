"""The peer table (``python -m validation peers``): every adapter whose library is installed, run against
every case, one summary and one coverage line each, and the Markdown table that the READMEs show.

The READMEs' peer figures come from this command alone, so a re-run on a fresh machine reproduces them
(with the library versions it prints).
"""
import importlib
import platform
import time

ADAPTERS = ["npflows", "nflows", "zuko", "normflows", "flowjax", "torchdiffeq", "torchdiffeq_backprop"]
LIBRARY = {"torchdiffeq_backprop": "torchdiffeq"}


def _version(lib):
    if lib == "npflows":
        import npflows
        return getattr(npflows, "__version__", "")
    try:
        from importlib.metadata import version
        return version(lib)
    except Exception:
        return "?"


def run_peers(cases, names=None, out=print):
    """Run each installed adapter of ``names`` (default :data:`ADAPTERS`) on ``cases``; print each one's
    summary and coverage; return the Markdown table's lines."""
    from .check import GROUPS, check, load_adapter
    rows = []
    for name in names or ADAPTERS:
        lib = LIBRARY.get(name, name)
        if lib != "npflows" and importlib.util.find_spec(lib) is None:
            out(f"{name}: not installed (skipped)")
            continue
        adapter = load_adapter(name)
        lines = []
        t0 = time.perf_counter()
        res = check(adapter, cases, out=lines.append)
        dt = time.perf_counter() - t0
        for line in lines:
            if line.startswith(("summary:", "coverage", "  ")):
                out(line)
        n = {s: sum(r.status == s for r in res) for s in ("pass", "FAIL", "differs", "error", "skip")}
        ran = [r for r in res if r.coverage]
        cov = []
        for _, test in GROUPS:
            tot = sum(1 for r in ran for q in r.coverage if test(q))
            comp = sum(1 for r in ran for q, v in r.coverage.items() if test(q) and v == "computed")
            cov.append(f"{100.0 * comp / tot:.0f}%" if tot else "-")
        rows.append(f"| {name} | {_version(lib)} | {n['pass']} | {n['FAIL']} | {n['differs']} | {n['error']} | "
                    f"{n['skip']} | " + " | ".join(cov) + f" | {dt:.1f} s |")
    head = [f"{len(cases)} cases; Python {platform.python_version()}, {platform.machine()}",
            "",
            "| adapter | version | pass | fail | differ (convention) | error | skipped | forward | inverse | "
            "logdets | input pullback | context pullback | parameter pullbacks | time |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    return head + rows


def write_readme(table, path=None):
    """Replace the table between ``<!-- peers-table -->`` and ``<!-- /peers-table -->`` in README.md."""
    import re
    from pathlib import Path
    path = Path(path or Path(__file__).resolve().parent / "README.md")
    text = path.read_text()
    new, n = re.subn(r"(<!-- peers-table -->\n).*?(<!-- /peers-table -->)",
                     lambda m: m.group(1) + "\n".join(table) + "\n" + m.group(2), text, flags=re.S)
    if n != 1:
        raise SystemExit(f"{path}: no peers-table markers")
    path.write_text(new)
