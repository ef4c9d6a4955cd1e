"""The command-line conventions the scripts share: ``--help`` shows the module docstring as written, and
each option's default once.

``argparse.ArgumentDefaultsHelpFormatter`` appends "(default: ...)" to every option, also to one whose help
already explains its default ("per dataset") or whose default is None (printed as "(default: None)").  This
formatter appends it only where the help text does not mention a default and the default is a value.

Stated targets (a test log-likelihood, a speed ratio) follow one rule in every script: a full run prints
"meets it" or "MISSES it" and exits with status 1 when any target is missed, after writing its outputs; a
``--quick`` run is a smoke run, says so next to every target, and exits 0 (its few steps are not meant to
meet them).

Run directly, it prints this text (it is a helper module, not a script).
"""
import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Raw description; "(default: X)" once, where the help does not state it and X is a value."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default is argparse.SUPPRESS or not action.option_strings):
            return text
        return text + " (default: %(default)s)"


def announce_quick(args):
    """Print, first thing, that a ``--quick`` run is a smoke run (``args.quick``)."""
    if getattr(args, "quick", False):
        print("--quick: a smoke run with tiny settings, to check that everything runs; its numbers are not "
              "this script's results", flush=True)


def target_verdict(met, quick):
    """The words after a stated target: "meets it" / "MISSES it", or, in a --quick smoke run, which of the two
    it would be and that the run is not meant to meet it."""
    if quick:
        return f"{'met' if met else 'not met'} (a --quick smoke run: not meant to meet it)"
    return "meets it" if met else "MISSES it"


def exit_status(missed, quick):
    """The process's exit status: 1 when a full run missed a stated target, else 0."""
    if missed and not quick:
        print("exit status 1: a stated target was missed (see above)")
        return 1
    return 0


if __name__ == "__main__":
    print(__doc__)
