"""Lazy exports for a package's face: each name is imported from its module the first time it is asked for."""
from importlib import import_module

__all__ = ["lazy_exports"]


def lazy_exports(package, exports):
    """A module-level `__getattr__` for `package`: `name` comes from its submodule `exports[name]` on first use."""
    def __getattr__(name):
        if name in exports:
            return getattr(import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
