"""Golden cases for other flow implementations: format, generator, certification, checker, adapters.

See ``validation/README.md``.  Nothing under ``npflows/`` imports this package; this package may import
autograd and mpmath (the ``validation`` extra).
"""
FORMAT_VERSION = 2
