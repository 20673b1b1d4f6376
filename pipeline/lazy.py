"""Modules imported on first use.

lmfit (with the scipy.stats it loads) took 0.3 s of every start of a command that fits,
though the batch engine fits ordinary series without it: it is imported when a fit
first asks for one of its names.
"""

from __future__ import annotations

import importlib


class LazyModule:
    """Stands for the module ``name``; the first attribute asked for imports it."""

    def __init__(self, name: str):
        self._name = name

    def load(self):
        """The module, imported now (e.g. before forking workers that will all use it)."""
        return importlib.import_module(self._name)

    def __getattr__(self, attr: str):
        return getattr(self.load(), attr)


lmfit = LazyModule("lmfit")
