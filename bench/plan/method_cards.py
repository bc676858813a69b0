"""The methods as their files state them, read without importing them (so without torch):
`bench list` and `bench sweep --dry-run` plan and check runs from these cards."""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.config import parse_options
from bench.core.options import MethodOptions


class NotStaticError(Exception):
    """A method file states something `method_cards` cannot read without running it."""


@dataclass(frozen=True)
class MethodCard:
    """What planning needs of a method: its name, docstring's first line, what it takes, and
    its options class (what `name.key=value` may set, checked as the method itself checks)."""

    name: str
    summary: str
    modalities: frozenset[str]
    encoder_kinds: frozenset[str]
    Options: type[MethodOptions]

    def options(self, raw: dict[str, Any]) -> MethodOptions:
        """Typed options from raw (possibly string) values; bad ones raise ConfigError. An
        options class read from source whose checks need more than the reader ran raises
        NotStaticError (the caller imports the method instead)."""
        try:
            return parse_options(self.Options, raw, prefix=self.name)
        except NameError as err:
            raise NotStaticError(f"{self.name}'s options need {err.name!r} to check a value") from None


def summary_line(doc: str | None) -> str:
    """A method's one line for `bench list`: the first line of its class docstring."""
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


# What the source reader runs of a method file: its imports of the standard library and of
# these torch-free modules, module-level assignments, functions and dataclasses. The
# rest (torch, the nn.Module classes) is skipped, whether or not torch is loaded already.
STATIC_MODULES = frozenset({"bench.core.options", "bench.core.config", "bench.core.errors"})


def _importable(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        names = [] if node.level else [node.module or ""]
    else:
        names = [alias.name for alias in node.names]
    return bool(names) and all(
        n in STATIC_MODULES or n.split(".")[0] in sys.stdlib_module_names for n in names)


def _is_dataclass(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if getattr(target, "id", None) == "dataclass" or getattr(target, "attr", None) == "dataclass":
            return True
    return False


def _static_part(tree: ast.Module) -> list[ast.stmt]:
    keep: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if _importable(node) and getattr(node, "module", None) != "__future__":
                keep.append(node)  # (__future__ imports head every statement instead)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.FunctionDef)) or (
                isinstance(node, ast.ClassDef) and _is_dataclass(node)):
            keep.append(node)
    return keep


def _read_module(path: Path, tree: ast.Module) -> types.ModuleType:
    """The static part of a method file, run as a module of its own (registered under a name
    no import can reach, so that `typing.get_type_hints` resolves its options' annotations). A
    statement that fails (it needs a skipped name) is left out: what needs it then fails."""
    module = types.ModuleType(f"{__name__}:{path}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    # each statement compiled alone, after the file's __future__ imports (lazy annotations)
    future = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    for node in _static_part(tree):
        code = compile(ast.Module([*future, node], type_ignores=[]), str(path), "exec")
        try:
            exec(code, module.__dict__)
        except Exception:  # noqa: BLE001 (it needed what was skipped; its users fail by name)
            continue
    return module


def _options_class(cls: ast.ClassDef, module: types.ModuleType,
                   default: type[MethodOptions] | None) -> type[MethodOptions]:
    named = [n.value for n in cls.body if isinstance(n, (ast.Assign, ast.AnnAssign))
             and any(getattr(t, "id", None) == "Options"
                     for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))]
    if not named:
        if default is None:
            raise NotStaticError(f"{cls.name} sets no Options")
        return default
    value = named[-1]
    found = getattr(module, value.id, None) if isinstance(value, ast.Name) else None
    if not (isinstance(found, type) and issubclass(found, MethodOptions)
            and dataclasses.is_dataclass(found)):
        raise NotStaticError(f"{cls.name}.Options is not a MethodOptions dataclass the source "
                             "reader can build (import its base from bench.core.options)")
    return found


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


@functools.cache
def method_cards() -> dict[str, MethodCard]:
    """Every method in the `methods` package, read from its source (no import, so no torch):
    the class decorated with `register_method("name")`, its docstring, its literal
    `modalities` / `encoder_kinds` and its `Options` (MaskingMethod's when it sets none). A
    file this cannot read raises NotStaticError; tests check the result equals the imported
    registry. Read once per process."""
    spec = importlib.util.find_spec("methods")
    if spec is None or not spec.submodule_search_locations:
        raise NotStaticError("the methods package is not on the path")
    return read_cards(Path(next(iter(spec.submodule_search_locations))))


def read_cards(folder: Path) -> dict[str, MethodCard]:
    """The cards of the method files in `folder` (its `base.py` holds MaskingMethod)."""
    paths = {p.stem: p for p in sorted(folder.glob("*.py")) if p.stem != "__init__"}
    trees = {stem: ast.parse(p.read_text(), str(p)) for stem, p in paths.items()}
    base_tree = trees.pop("base")
    base = next(n for n in base_tree.body
                if isinstance(n, ast.ClassDef) and n.name == "MaskingMethod")
    defaults = _class_sets(base)
    default_options = _options_class(base, _read_module(paths["base"], base_tree), None)
    cards: dict[str, MethodCard] = {}
    for stem, tree in trees.items():
        module = None
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            name = _registered_name(cls)
            if name is None:
                continue
            if not (len(cls.bases) == 1 and getattr(cls.bases[0], "id", "") == "MaskingMethod"):
                raise NotStaticError(f"{cls.name} does not subclass MaskingMethod directly")
            sets = {**defaults, **_class_sets(cls)}
            module = module or _read_module(paths[stem], tree)
            cards[name] = MethodCard(name, summary_line(ast.get_docstring(cls)), sets["modalities"],
                                     sets["encoder_kinds"],
                                     _options_class(cls, module, default_options))
    return dict(sorted(cards.items()))
