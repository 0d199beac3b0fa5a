"""The public API is what toniq/__init__.py re-exports, and nothing more."""

from __future__ import annotations

import importlib.resources
import inspect

import toniq


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in dir(toniq) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(toniq, name))}
    assert sorted(toniq.__all__) == sorted(toniq.__all__)  # kept sorted for review
    assert set(toniq.__all__) == (public - modules) | {"__version__"}
    for name in toniq.__all__:
        assert hasattr(toniq, name), name


def test_public_callables_have_docstrings() -> None:
    for name in toniq.__all__:
        obj = getattr(toniq, name)
        if callable(obj):
            assert inspect.getdoc(obj), f"toniq.{name} has no docstring"


def test_package_is_typed() -> None:
    assert importlib.resources.files("toniq").joinpath("py.typed").is_file()


def test_version() -> None:
    assert toniq.__version__.count(".") == 2
