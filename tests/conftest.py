import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def pytest_terminal_summary(terminalreporter):
    """The hostile-input sweep's counts (tests/test_hostile.py), when it ran."""
    mod = sys.modules.get("test_hostile")
    stats = getattr(mod, "STATS", None)
    if stats:
        parts = ", ".join(f"{k} {v:.0f}" if k == "seconds" else f"{k} {v}" for k, v in sorted(stats.items()))
        terminalreporter.write_line(f"hostile-input sweep: {parts}")
