"""Transform descriptions for the golden cases: :mod:`npflows.describe`, without the resource limits.

A case's ``transform`` describes the map only; the CNF's ``max_nfe`` (a solver budget, not part of the map)
is left out, so another implementation is not asked for it.  The code lives in ``npflows/describe.py``,
where ``npflows.save`` and ``npflows.load`` use it to store and rebuild whole models.
"""
from npflows.describe import NOT_THE_MAP, build, family_of  # noqa: F401
from npflows.describe import describe as _describe


def describe(b):
    """The JSON description of bijector ``b`` as a golden case stores it (no resource limits)."""
    return _describe(b, limits=False)
