"""The plugins: one masking strategy per sub-package, found here without importing torch.

A method is one small folder, `methods/<name>/`: `__init__.py` states its `CARD`
(bench.core.cards.MethodCard: name, modalities, encoder kinds, options, diagnostics; plain
data) and `method.py` its `MaskingMethod`, imported only when a run builds it. So `bench list`,
dry runs and reports read every method without torch. A single file `methods/<name>.py` whose
class is decorated `@register_method("name")` works too; it is imported to be planned (torch).

Folders named in `$MASKBENCH_METHODS` (os.pathsep-separated) are searched as well, so your own
methods need not live inside this package.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import pkgutil

from bench.core.cards import MethodCard
from bench.core.errors import UnknownMethodError
from bench.core.registry import Registry

USER_METHODS_ENV = "MASKBENCH_METHODS"
# Every card found: the sub-packages' (method_cards) and those of single-file methods
# (methods.base.register_method adds them when their file is imported).
CARDS: Registry[MethodCard] = Registry("method", UnknownMethodError)

for _folder in filter(None, os.environ.get(USER_METHODS_ENV, "").split(os.pathsep)):
    if _folder not in __path__:
        __path__.append(_folder)


@functools.cache
def method_cards() -> Registry[MethodCard]:
    """Every method's card: each sub-package's `CARD` (its class module: `<package>.method`),
    and the cards single-file methods register when imported. Read once per process."""
    for module in pkgutil.iter_modules(__path__):
        if module.name == "base":
            continue
        found = importlib.import_module(f"{__name__}.{module.name}")
        card = getattr(found, "CARD", None) if module.ispkg else None
        if isinstance(card, MethodCard):
            CARDS.add(card.name, card if card.module else
                      dataclasses.replace(card, module=f"{found.__name__}.method"))
    return CARDS


def __getattr__(name: str):
    """`methods.METHODS`, `MaskingMethod`, `register_method`, `build_method`: methods.base,
    imported (with torch) on first use."""
    if name in ("METHODS", "MaskingMethod", "register_method", "build_method", "MethodOptions"):
        from methods import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


