"""Command line of the validation suite.

    python -m validation check ADAPTER [--cases SUBSTRING]   # run an adapter against every case
    python -m validation peers                               # every installed peer: the READMEs' table
    python -m validation report [--all]                      # the cases, and npflows' agreement with them
    python -m validation.generate [--check]                  # regenerate the cases (see generate.py)

Installed (``pip install "npflows[validation]"``), the same commands are ``python -m npflows_validation ...``
or ``npflows-validation ...`` from any directory.

ADAPTER is ``npflows``, ``nflows``, ``zuko``, ``normflows``, ``flowjax``, ``torchdiffeq``,
``torchdiffeq_backprop`` (the modules in validation/adapters/), a module name, or the path of your own
adapter file: a module defining ``NAME``, ``supports(case)`` and ``run(case)`` (see the docstring of
validation/adapters/__init__.py).
"""
import argparse
import sys

from .check import check, load_adapter
from .format import load_cases


def main(argv=None):
    ap = argparse.ArgumentParser(prog=f"python -m {__package__}", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="run an adapter against the cases")
    c.add_argument("adapter", help="npflows, nflows, zuko, normflows, flowjax, torchdiffeq, torchdiffeq_backprop, "
                                   "a module name, or the path of an adapter .py file defining NAME, "
                                   "supports(case) and run(case)")
    c.add_argument("--cases", help="only cases whose name contains this")
    c.add_argument("--failures", action="store_true", help="print only failing and erroring cases")
    c.add_argument("-v", "--verbose", action="store_true", help="worst digits of every quantity")
    pe = sub.add_parser("peers", help="run every installed peer adapter; print the READMEs' table")
    pe.add_argument("--only", action="append", help="adapter name (repeatable)")
    pe.add_argument("--write-readme", action="store_true", help="put the table into validation/README.md")
    r = sub.add_parser("report", help="the cases, and npflows' agreement with them")
    r.add_argument("--all", action="store_true", help="list every number below 13 digits")
    a = ap.parse_args(argv)
    if a.cmd == "check":
        adapter = load_adapter(a.adapter)
        cases = load_cases(select=a.cases)
        if a.failures:
            lines = []
            res = check(adapter, cases, out=lines.append)
            bad = {r.name for r in res if r.status in ("FAIL", "error")}
            print("\n".join(l for l in lines if l.split(" ", 1)[0] in bad or l.startswith(("case", "summary"))))
        else:
            res = check(adapter, cases, verbose=a.verbose)
        return 1 if any(r.status in ("FAIL", "error") for r in res) else 0
    if a.cmd == "peers":
        from .peers import run_peers, write_readme
        table = run_peers(load_cases(), a.only)
        print("\n".join(table))
        if a.write_readme:
            write_readme(table)
        return 0
    from .report import report
    print(report(load_cases(), full=a.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
