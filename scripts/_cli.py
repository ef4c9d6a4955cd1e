"""The command-line conventions the scripts share: ``--help`` shows the module docstring as written, and
each option's default once.

``argparse.ArgumentDefaultsHelpFormatter`` appends "(default: ...)" to every option, also to one whose help
already explains its default ("per dataset") or whose default is None (printed as "(default: None)").  This
formatter appends it only where the help text does not mention a default and the default is a value.

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


if __name__ == "__main__":
    print(__doc__)
