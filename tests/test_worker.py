"""Worker definition: options as class keywords, checked when the class is defined."""

from __future__ import annotations

import pytest

import toniq
from toniq.worker import WorkerOptions, get_worker, registry


def test_defaults_and_registration() -> None:
    class Plain(toniq.Worker):
        def perform(self) -> None: ...

    assert Plain.worker_name == f"{__name__}.test_defaults_and_registration.<locals>.Plain"
    assert Plain.worker_options.max_concurrency is None and Plain.worker_options.persist
    assert not Plain.is_async
    assert get_worker(Plain.worker_name) is Plain


def test_options_as_class_keywords() -> None:
    class Opt(toniq.Worker, max_concurrency=4, persist=False, name="custom.Name"):
        async def perform(self) -> None: ...

    assert Opt.worker_name == "custom.Name" and registry["custom.Name"] is Opt
    assert Opt.worker_options == WorkerOptions("custom.Name", 4, False)
    assert Opt.is_async


def test_unknown_option_names_the_known_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown worker option.*concurrency.*known options are"):

        class Bad(toniq.Worker, concurrency=3):  # type: ignore[call-arg]
            def perform(self) -> None: ...


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3"])
def test_bad_max_concurrency(value: object) -> None:
    with pytest.raises(toniq.ConfigurationError, match="max_concurrency"):

        class Bad(toniq.Worker, max_concurrency=value):
            def perform(self) -> None: ...


def test_perform_is_required_unless_abstract() -> None:
    with pytest.raises(TypeError, match="must define perform"):

        class NoPerform(toniq.Worker):
            pass

    class Base(toniq.Worker, abstract=True, max_concurrency=2):
        pass

    class Child(Base):
        def perform(self) -> None: ...

    assert Base.worker_name not in registry
    assert Child.worker_options.max_concurrency == 2  # options are inherited, names are not
    with pytest.raises(toniq.NotAWorkerError, match="abstract"):
        toniq.Toniq(url="memory://").enqueue(Base)


def test_two_workers_cannot_share_a_name() -> None:
    class First(toniq.Worker, name="shared.name"):
        def perform(self) -> None: ...

    with pytest.raises(toniq.ConfigurationError, match="already used"):

        class Second(toniq.Worker, name="shared.name"):
            def perform(self) -> None: ...


def test_redefining_the_same_class_replaces_it() -> None:
    def define() -> type[toniq.Worker]:
        class Again(toniq.Worker, name="again.Again"):
            def perform(self) -> None: ...

        return Again

    first, second = define(), define()
    assert registry["again.Again"] is second and first is not second


def test_function_workers() -> None:
    @toniq.worker
    def plain(x: int) -> int:
        return x + 1

    @toniq.worker(max_concurrency=2, name="fn.limited")
    async def limited() -> None: ...

    assert plain(1) == 2
    assert plain.worker.worker_name.endswith("test_function_workers.<locals>.plain")
    assert limited.worker.worker_options.max_concurrency == 2 and limited.worker.is_async
    with pytest.raises(TypeError, match="unknown worker option"):
        toniq.worker(retry=3)(lambda: None)


def test_get_worker_of_an_unknown_name() -> None:
    with pytest.raises(toniq.UnknownWorkerError, match="no worker named"):
        get_worker("no.such.Worker")
