"""The public API: every name resolves, nothing heavy is imported until a name is used."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pyrallel_consumer

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", pyrallel_consumer.__all__)
def test_every_public_name_resolves_to_the_object_its_module_defines(name: str) -> None:
    value = getattr(pyrallel_consumer, name)
    assert value is not None
    if isinstance(value, type):
        assert value.__name__ == name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Consumer'"):
        _ = pyrallel_consumer.Consumer  # type: ignore[attr-defined]


def test_importing_the_package_loads_neither_tooling_nor_the_control_plane() -> None:
    code = ("import pyrallel_consumer, sys; print(sorted(m for m in sys.modules if m.startswith(("
            "'click', 'matplotlib', 'confluent_kafka', 'pyrallel_tools', 'pyrallel_consumer.'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_type_checking_imports_name_the_same_modules_as_the_lazy_table() -> None:
    """Type checkers read the TYPE_CHECKING imports, the runtime reads _PUBLIC: one must not drift from the other."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(pyrallel_consumer))
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    imported = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert imported == pyrallel_consumer._PUBLIC
