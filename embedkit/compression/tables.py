"""Deprecated alias of :mod:`embedkit.tables` (categorical-feature embedding tables moved there).

``from embedkit.compression.tables import UnifiedEmbedding`` and submodule imports
(``from embedkit.compression.tables.unified import UnifiedEmbedding``, ``...budget``, ...) keep
working and give the very objects of :mod:`embedkit.tables`; new code should import from there.
"""

from __future__ import annotations

import importlib
import sys

from embedkit.tables import *  # noqa: F401,F403
from embedkit.tables import __all__  # noqa: F401

_SUBMODULES = ("_hash", "_vocab", "base", "budget", "full", "hashing", "qr", "unified")

# The old submodule names point at the moved modules (same module objects, so isinstance checks
# agree across the two spellings); importlib finds them in sys.modules once this module is imported.
for _name in _SUBMODULES:
    _module = importlib.import_module(f"embedkit.tables.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
del _name, _module
