"""Command line of the validation suite.

    python -m validation check ADAPTER [--cases SUBSTRING]   # run an adapter against every case
    python -m validation report [--all]                      # the certification report
    python -m validation.generate [--check]                  # regenerate the cases (see generate.py)

ADAPTER is ``npflows``, ``nflows``, ``zuko``, ``normflows``, ``torchdiffeq``, ``torchdiffeq_backprop``,
``flowjax`` (the modules in validation/adapters/), a module name, or
the path of your own adapter file (see validation/adapters/__init__.py for the three names it defines).
"""
import argparse
import sys

from .check import check, load_adapter
from .format import load_cases


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m validation")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="run an adapter against the cases")
    c.add_argument("adapter")
    c.add_argument("--cases", help="only cases whose name contains this")
    c.add_argument("--failures", action="store_true", help="print only failing and erroring cases")
    c.add_argument("-v", "--verbose", action="store_true", help="worst digits of every quantity")
    r = sub.add_parser("report", help="certification report")
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
    from .report import report
    print(report(load_cases(), full=a.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
