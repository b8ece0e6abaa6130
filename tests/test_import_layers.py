"""Imports flow one way (docs/architecture.md): read from the source, so a new import that
breaks a rule fails here, naming the module and the line."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.conftest import ROOT

TOP = {"gateway/app.py", "gateway/cli.py", "gateway/__main__.py"}  # may import anything


def imports(package: str) -> Iterator[tuple[str, int, str]]:
    """(module path, line, imported module) for every import under `package`, lazy ones too."""
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield rel, node.lineno, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                yield rel, node.lineno, node.module


def breaches(package: str, allowed: Callable[[str, str], bool]) -> list[str]:
    return [f"{rel}:{line} imports {name}" for rel, line, name in imports(package) if not allowed(rel, name)]


def under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_nothing_below_the_http_layer_imports_it() -> None:
    assert (
        breaches(
            "gateway",
            lambda rel, name: (
                rel in TOP or rel.startswith("gateway/http/") or not under(name, "gateway.http")
            ),
        )
        == []
    )


def test_no_library_module_imports_a_command_line() -> None:
    def allowed(rel: str, name: str) -> bool:
        cli = under(name, "gateway.cli") or name.endswith("_cli")
        return not cli or rel in TOP or Path(rel).stem.endswith("_cli")

    assert breaches("gateway", allowed) + breaches("smpp", allowed) + breaches("actions_dsl", allowed) == []


def test_the_adapters_and_the_parser_know_nothing_of_the_gateway() -> None:
    assert breaches("smpp", lambda rel, name: not under(name, "gateway", "actions_dsl")) == []
    assert (
        breaches("actions_dsl", lambda rel, name: not under(name, "gateway", "smpp", "aiohttp", "sqlalchemy"))
        == []
    )
