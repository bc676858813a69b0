"""Masking strategies, one file each. Importing this package registers every method in it."""

import importlib
import pkgutil

from methods.base import METHODS, MaskingMethod, MethodOptions, register_method

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "MaskingMethod", "MethodOptions", "register_method"]
