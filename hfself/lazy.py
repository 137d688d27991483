"""Lazy re-exports: a package's public names are imported on first use, so importing the package stays cheap."""

from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_exports(package: str, table: dict[str, str], why: str = "") -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: public ``name`` lives in module ``table[name]``.

    ``table`` values are module names, relative to ``package`` (``".model"``) or absolute. The
    value is cached on the package after its first import. ``why`` is added to an ImportError
    (e.g. which plugin a name comes from).
    """

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(table[name], package)
        except ImportError as err:
            raise ImportError(f"{package}.{name} failed to import{why}: {err}") from err
        value = getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
