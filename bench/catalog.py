"""Names every layer shares, importing no torch: the reference rows every table carries, and
the methods as their files state them (`method_cards`), so that `bench list` starts without
loading torch or timm."""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path

# Reference rows: what the same probes give without pretraining, so a reader sees what
# pretraining adds. They train nothing (epochs 0) and take no method options. In table order.
REFERENCES: dict[str, str] = {
    "random-init": "the same encoder, untrained (probes on its random features)",
    "raw-input": "the same probes on the standardised input (pixels, or bag-of-words for text)",
}


@dataclass(frozen=True)
class MethodCard:
    """What `bench list` says of a method: its name, docstring's first line, what it takes."""

    name: str
    summary: str
    modalities: frozenset[str]
    encoder_kinds: frozenset[str]


class NotStaticError(Exception):
    """A method file states something `method_cards` cannot read without running it."""


def _class_sets(cls: ast.ClassDef) -> dict[str, frozenset[str]]:
    """Class attributes of the form `name = frozenset({...})` (or annotated), as sets."""
    found: dict[str, frozenset[str]] = {}
    for node in cls.body:
        target = (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1
                  else node.target if isinstance(node, ast.AnnAssign) else None)
        if not isinstance(target, ast.Name) or target.id not in ("modalities", "encoder_kinds"):
            continue
        value = node.value
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id == "frozenset" and len(value.args) == 1):
            try:
                found[target.id] = frozenset(ast.literal_eval(value.args[0]))
                continue
            except ValueError:
                pass
        raise NotStaticError(f"{cls.name}.{target.id} is not a literal frozenset")
    return found


def _registered_name(cls: ast.ClassDef) -> str | None:
    for deco in cls.decorator_list:
        func = deco.func if isinstance(deco, ast.Call) else None
        if getattr(func, "id", None) == "register_method" or \
                getattr(func, "attr", None) == "register_method":
            if len(deco.args) == 1 and isinstance(deco.args[0], ast.Constant):
                return deco.args[0].value
            raise NotStaticError(f"{cls.name}: register_method's name is not a literal")
    return None


def method_cards() -> dict[str, MethodCard]:
    """Every method in the `methods` package, read from its source (no import, so no torch):
    the class decorated with `register_method("name")`, its docstring and its literal
    `modalities` / `encoder_kinds` (MaskingMethod's when it sets none). A file this cannot
    read raises NotStaticError; tests check the result equals the imported registry."""
    spec = importlib.util.find_spec("methods")
    if spec is None or not spec.submodule_search_locations:
        raise NotStaticError("the methods package is not on the path")
    folder = Path(next(iter(spec.submodule_search_locations)))
    trees = {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(folder.glob("*.py"))
             if p.stem != "__init__"}
    base = next(n for n in trees.pop("base").body
                if isinstance(n, ast.ClassDef) and n.name == "MaskingMethod")
    defaults = _class_sets(base)
    cards: dict[str, MethodCard] = {}
    for tree in trees.values():
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            name = _registered_name(cls)
            if name is None:
                continue
            if not (len(cls.bases) == 1 and getattr(cls.bases[0], "id", "") == "MaskingMethod"):
                raise NotStaticError(f"{cls.name} does not subclass MaskingMethod directly")
            sets = {**defaults, **_class_sets(cls)}
            summary = (ast.get_docstring(cls) or "").strip().splitlines()
            cards[name] = MethodCard(name, summary[0] if summary else "", sets["modalities"],
                                     sets["encoder_kinds"])
    return dict(sorted(cards.items()))
