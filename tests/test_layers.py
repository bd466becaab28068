"""Imports run one way: pipelines → assets → question layer → checks / methods / extract → configs.

The test walks every module's imports with ``ast`` (top-level and function-level alike) and fails
on any import against that direction, on Dagster below ``assets/``, and on a method subpackage
importing another method's. ``convocausal/cli.py`` is the console entry point and sits above
every layer; the rest of ``convocausal/`` (question layer, store, memo, file settings) sits
between ``assets/`` and ``checks/``. ``pipelines/partitions.py`` and ``pipelines/resources.py``
are the wiring the asset decorators need (as in Dagster's own examples): assets may import them,
and they import no asset.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "assets", "convocausal", "checks", "methods", "extract", "configs", "data_fixtures")

# rank: a module may import modules of its own or a lower rank (larger number), never higher
# what each layer may import among the project's packages (beyond its own)
ALLOWED = {
    "entry": set(PACKAGES),
    "pipelines": {"assets", "wiring", "convocausal", "checks", "methods", "extract", "configs"},
    "assets": {"wiring", "convocausal", "checks", "methods", "extract", "configs"},
    "wiring": {"convocausal", "checks", "methods", "extract", "configs"},
    "convocausal": {"checks", "methods", "extract", "configs"},
    "extract": {"configs"},
    "checks": {"methods"},  # the result types only
    "methods": set(),
    "configs": set(),
    "data_fixtures": set(),
}
WIRING = {"pipelines.partitions", "pipelines.resources"}
NO_DAGSTER = {"convocausal", "checks", "methods", "extract", "configs", "data_fixtures"}


def _layer(module: str) -> str:
    if module == "convocausal.cli":
        return "entry"
    if ".".join(module.split(".")[:2]) in WIRING:
        return "wiring"
    return module.split(".")[0]


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            yield ".".join(p for p in rel.parts if p != "__init__"), path


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from methods import psm` imports methods.psm
                yield node.lineno, f"{node.module}.{alias.name}"


def _violations():
    out = []
    for module, path in _modules():
        layer = _layer(module)
        for line, target in _imports(path):
            top = target.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if top == "dagster" and layer in NO_DAGSTER:
                out.append(f"{where}: no Dagster below assets/")
            if top not in PACKAGES or top == layer and _layer(target) == layer:
                if top == "methods" and layer == "methods":
                    own, other = module.split(".")[:2], target.split(".")[:2]
                    if len(own) > 1 and len(other) > 1 and own[1] != other[1] and other[1] in _METHOD_SUBPACKAGES \
                            and own[1] in _METHOD_SUBPACKAGES:
                        out.append(f"{where}: a method subpackage imports another method's")
                continue
            target_layer = _layer(target)
            if target_layer == "entry" and layer != "entry":
                out.append(f"{where}: nothing imports the command line")
            elif target_layer not in ALLOWED[layer]:
                out.append(f"{where}: {layer} must not import {target_layer}")
            elif layer == "checks" and not target.startswith("methods.result"):
                out.append(f"{where}: checks may import only the result types of methods")
    return out


_METHOD_SUBPACKAGES = {p.name for p in (ROOT / "methods").iterdir() if (p / "__init__.py").is_file()}


def test_imports_follow_the_layers():
    assert _violations() == []


def test_every_method_has_a_subpackage():
    assert {"psm", "sc", "did"} <= _METHOD_SUBPACKAGES


@pytest.mark.parametrize("bad, expected", [
    ("from pipelines.definitions import defs\n", "methods must not import pipelines"),
    ("import dagster\n", "no Dagster below assets/"),
    ("from checks.catalog import CATALOG\n", "methods must not import checks"),
    ("from methods.sc.core import ALPHA\n", "another method's"),
])
def test_the_walk_catches_a_wrong_import(tmp_path, monkeypatch, bad, expected):
    """The test itself can fail: a planted import against the direction is reported."""
    planted = ROOT / "methods" / "psm" / "_planted_for_test.py"
    planted.write_text(bad)
    try:
        found = [v for v in _violations() if "_planted_for_test" in v]
    finally:
        planted.unlink()
    assert found and expected in found[0], found
