"""Workers: the classes (or decorated functions) whose ``perform`` runs jobs.

A worker registers itself under its name when its class is defined; a node runs
only workers its own program registered, and never imports a module named by a job.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypeVar, overload

from toniq.errors import ConfigurationError, NotAWorkerError, UnknownWorkerError

if TYPE_CHECKING:
    from toniq.app import JobHandle
    from toniq.events import JobEvent

P = ParamSpec("P")
R = TypeVar("R")

#: Worker options, given as class keywords: ``class W(toniq.Worker, max_concurrency=3)``.
WORKER_OPTIONS = ("name", "max_concurrency", "persist", "retries", "backoff", "timeout", "abstract")
#: Options of one enqueue, given with ``W.with_options(...)``.
ENQUEUE_OPTIONS = ("persist", "delay", "at", "hold", "timeout")

#: Every worker this process defined, by name.
registry: dict[str, type[Worker]] = {}


@dataclass(frozen=True)
class WorkerOptions:
    """The options of a worker class, as validated at class definition."""

    name: str
    max_concurrency: int | None = None
    persist: bool = True
    #: Retries after the first run (``None``: the app's ``retries`` setting).
    retries: int | None = None
    #: Seconds to wait before retry n, from n (``None``: the app's ``backoff``).
    backoff: Callable[[int], float] | None = None
    #: Seconds a run may take before it is stopped (``None``: no limit).
    timeout: float | None = None


class Worker:
    """Base class of workers. Define ``perform``; enqueue with :func:`toniq.enqueue`.

    Options are class keywords: ``name`` (default ``module.QualName``),
    ``max_concurrency`` (jobs of this worker running at once on one node; default
    unlimited), ``persist`` (default ``True``; ``False`` runs jobs in the enqueuing
    process without storing them), ``retries`` (retries after a failed run; default
    the app's, 5), ``backoff`` (seconds before retry n, from n; default ``n**4 / 4``
    plus a little jitter), ``timeout`` (seconds a run may take) and ``abstract`` (a base
    class that is not registered). An unknown option is an error.

    Example::

        class SendEmail(toniq.Worker, max_concurrency=10):
            def perform(self, to: str, subject: str) -> None:
                ...

        toniq.enqueue(SendEmail, to="info@example.com", subject="Hello")

    ``perform`` may be ``def`` (run in the node's thread pool) or ``async def``
    (run as a task on the node's event loop).
    """

    worker_options: ClassVar[WorkerOptions]
    worker_name: ClassVar[str]
    is_async: ClassVar[bool]
    _toniq_signature: ClassVar[inspect.Signature | None]

    def __init_subclass__(cls, **options: Any) -> None:
        check_known(f"{cls.__qualname__}: unknown worker option", options, WORKER_OPTIONS)
        abstract = bool(options.pop("abstract", False))
        super().__init_subclass__()
        inherited = getattr(cls, "worker_options", None)
        name = options.get("name", f"{cls.__module__}.{cls.__qualname__}")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{cls.__qualname__}: name must be a non-empty string")
        max_concurrency = options.get(
            "max_concurrency", inherited.max_concurrency if inherited else None
        )
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ConfigurationError(
                f"{cls.__qualname__}: max_concurrency must be a positive int or None, "
                f"got {max_concurrency!r}"
            )
        persist = options.get("persist", inherited.persist if inherited else True)
        if not isinstance(persist, bool):
            raise ConfigurationError(f"{cls.__qualname__}: persist must be True or False")
        retries = options.get("retries", inherited.retries if inherited else None)
        if retries is not None and (
            isinstance(retries, bool) or not isinstance(retries, int) or retries < 0
        ):
            raise ConfigurationError(
                f"{cls.__qualname__}: retries must be an int >= 0 (0 for none), got {retries!r}"
            )
        backoff = options.get("backoff", inherited.backoff if inherited else None)
        if backoff is not None and not callable(backoff):
            raise ConfigurationError(
                f"{cls.__qualname__}: backoff must be a function of the attempt number "
                f"returning seconds, got {backoff!r}"
            )
        timeout = options.get("timeout", inherited.timeout if inherited else None)
        timeout = check_timeout(timeout, cls.__qualname__)
        cls.worker_options = WorkerOptions(
            name, max_concurrency, persist, retries, backoff, timeout
        )
        cls.worker_name = name
        cls.is_async = inspect.iscoroutinefunction(cls.perform)
        cls._toniq_signature = _signature(cls.perform)
        if abstract:
            return
        if cls.perform is Worker.perform:
            raise TypeError(f"{cls.__qualname__}: a worker must define perform()")
        _register(cls)

    def perform(self, *args: Any, **kwargs: Any) -> Any:
        """Do the job. Override this (``def`` or ``async def``)."""
        raise NotImplementedError

    # Hooks: override to react to this worker's jobs (error trackers, metrics). They run
    # on the node after the outcome is stored; one that raises is logged and ignored.
    def on_success(self, event: JobEvent) -> None:
        """Called after a job of this worker finished."""

    def on_retry(self, event: JobEvent) -> None:
        """Called after a failed run that will be retried (``event.retry_at``)."""

    def on_failure(self, event: JobEvent) -> None:
        """Called once a job of this worker failed for good (retries exhausted)."""

    @classmethod
    def enqueue(cls, *args: Any, **kwargs: Any) -> JobHandle:
        """Enqueue a job of this worker: same as ``toniq.enqueue(cls, *args, **kwargs)``."""
        from toniq.app import get_app

        return get_app().enqueue(cls, *args, **kwargs)

    @classmethod
    async def enqueue_async(cls, *args: Any, **kwargs: Any) -> JobHandle:
        """The async twin of :meth:`enqueue`."""
        from toniq.app import get_app

        return await get_app().enqueue_async(cls, *args, **kwargs)

    @classmethod
    def enqueue_many(cls, calls: Iterable[Any], /) -> list[JobHandle]:
        """Enqueue many jobs of this worker: same as ``toniq.enqueue_many(cls, calls)``.

        Example: ``SendEmail.enqueue_many([("a@example.com",), {"to": "b@example.com"}])``.
        """
        from toniq.app import get_app

        return get_app().enqueue_many(cls, calls)

    @classmethod
    async def enqueue_many_async(cls, calls: Iterable[Any], /) -> list[JobHandle]:
        """The async twin of :meth:`enqueue_many`."""
        from toniq.app import get_app

        return await get_app().enqueue_many_async(cls, calls)

    @classmethod
    def with_options(cls, **options: Any) -> EnqueueSpec:
        """Options for one enqueue, kept apart from the job's own arguments: ``persist``,
        ``delay`` (seconds or timedelta), ``at`` (a datetime), ``hold`` (wait until
        released by hand) and ``timeout``.

        Example: ``SendEmail.with_options(delay=60).enqueue(to="a@b.c")``.
        """
        return EnqueueSpec(cls, {}).with_options(**options)


def check_known(what: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Raise ``TypeError`` naming the unknown keywords and listing the known ones."""
    known = list(known)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(
            f"{what}(s) {', '.join(unknown)}; known options are {', '.join(sorted(known))}"
        )


def check_timeout(value: Any, owner: str) -> float | None:
    """A timeout as positive seconds, or None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{owner}: timeout must be seconds > 0 or a timedelta")
    return float(value)


def _signature(perform: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(perform)
    except (TypeError, ValueError):  # some callables have no signature; skip the check
        return None


def _register(cls: type[Worker]) -> None:
    existing = registry.get(cls.worker_name)
    if existing is not None and (existing.__module__, existing.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise ConfigurationError(
            f"worker name {cls.worker_name!r} is already used by "
            f"{existing.__module__}.{existing.__qualname__}; give one of them name=..."
        )
    # The same class defined again (a module reloaded, a test run twice) replaces itself.
    registry[cls.worker_name] = cls


def get_worker(name: str) -> type[Worker]:
    """The worker class registered under ``name``; :class:`UnknownWorkerError` if none."""
    try:
        return registry[name]
    except KeyError:
        raise UnknownWorkerError(
            f"no worker named {name!r} is registered in this process "
            "(is the module that defines it imported by this node?)"
        ) from None


class EnqueueSpec:
    """A worker together with options for one enqueue (from ``W.with_options(...)``)."""

    def __init__(self, worker: type[Worker], options: dict[str, Any]) -> None:
        self.worker = worker
        self.options = options

    def with_options(self, **options: Any) -> EnqueueSpec:
        check_known("unknown enqueue option", options, ENQUEUE_OPTIONS)
        for flag in ("persist", "hold"):
            if flag in options and not isinstance(options[flag], bool):
                raise ConfigurationError(f"{flag} must be True or False")
        if "delay" in options:
            delay = options["delay"]
            if isinstance(delay, timedelta):
                delay = options["delay"] = delay.total_seconds()
            if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
                raise ConfigurationError(
                    f"delay must be seconds >= 0 or a timedelta, got {options['delay']!r}"
                )
        if "at" in options and not isinstance(options["at"], datetime):
            raise ConfigurationError(f"at must be a datetime, got {options['at']!r}")
        if "timeout" in options:
            options["timeout"] = check_timeout(options["timeout"], "with_options")
        merged = {**self.options, **options}
        when = [k for k in ("delay", "at") if k in merged] + (
            ["hold"] if merged.get("hold") else []
        )
        if len(when) > 1:
            raise ConfigurationError(f"give at most one of delay, at and hold (got {when})")
        return EnqueueSpec(self.worker, merged)

    def enqueue(self, *args: Any, **kwargs: Any) -> JobHandle:
        from toniq.app import get_app

        return get_app().enqueue(self, *args, **kwargs)

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> JobHandle:
        from toniq.app import get_app

        return await get_app().enqueue_async(self, *args, **kwargs)

    def enqueue_many(self, calls: Iterable[Any], /) -> list[JobHandle]:
        from toniq.app import get_app

        return get_app().enqueue_many(self, calls)

    async def enqueue_many_async(self, calls: Iterable[Any], /) -> list[JobHandle]:
        from toniq.app import get_app

        return await get_app().enqueue_many_async(self, calls)

    def __repr__(self) -> str:
        return f"<EnqueueSpec {self.worker.worker_name} {self.options}>"


class WorkerFunction(Generic[P, R]):
    """A function made into a worker by :func:`toniq.worker`. Calling it calls the
    function directly; ``.enqueue(...)`` runs it as a job."""

    def __init__(self, func: Callable[P, R], worker: type[Worker]) -> None:
        self.func = func
        self.worker = worker
        functools.update_wrapper(self, func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        return self.worker.enqueue(*args, **kwargs)

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        return await self.worker.enqueue_async(*args, **kwargs)

    def enqueue_many(self, calls: Iterable[Any], /) -> list[JobHandle]:
        return self.worker.enqueue_many(calls)

    async def enqueue_many_async(self, calls: Iterable[Any], /) -> list[JobHandle]:
        return await self.worker.enqueue_many_async(calls)

    def with_options(self, **options: Any) -> EnqueueSpec:
        return self.worker.with_options(**options)

    def __repr__(self) -> str:
        return f"<toniq worker function {self.worker.worker_name}>"


@overload
def worker(func: Callable[P, R], /) -> WorkerFunction[P, R]: ...
@overload
def worker(
    func: None = None, /, **options: Any
) -> Callable[[Callable[P, R]], WorkerFunction[P, R]]: ...


def worker(
    func: Callable[P, R] | None = None, /, **options: Any
) -> WorkerFunction[P, R] | Callable[[Callable[P, R]], WorkerFunction[P, R]]:
    """Make a function a worker; same options as :class:`Worker`.

    Example::

        @toniq.worker(max_concurrency=3)
        async def resize(path: str) -> None:
            ...

        resize.enqueue("cat.png")
    """

    def wrap(f: Callable[P, R]) -> WorkerFunction[P, R]:
        if inspect.iscoroutinefunction(f):
            af: Callable[..., Awaitable[Any]] = f

            async def perform(self: Worker, *args: Any, **kwargs: Any) -> Any:
                return await af(*args, **kwargs)
        else:

            def perform(self: Worker, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                return f(*args, **kwargs)

        opts = {"name": f"{f.__module__}.{f.__qualname__}", **options}
        namespace = {
            "perform": perform,
            "__module__": f.__module__,
            "__qualname__": f.__qualname__,
            "__doc__": f.__doc__,
        }
        cls = types.new_class(f.__name__, (Worker,), opts, lambda ns: ns.update(namespace))
        # Check enqueue arguments against the function's own signature, not perform's.
        worker_cls: Any = cls
        worker_cls._toniq_signature = _signature(f)
        worker_cls._toniq_is_function = True
        return WorkerFunction(f, cls)

    if func is not None:
        return wrap(func)
    return wrap


def resolve(target: Any) -> tuple[type[Worker], dict[str, Any]]:
    """Turn what was passed to enqueue into ``(worker class, enqueue options)``."""
    if isinstance(target, EnqueueSpec):
        return target.worker, target.options
    if isinstance(target, WorkerFunction):
        return target.worker, {}
    if isinstance(target, type) and issubclass(target, Worker):
        if not hasattr(target, "worker_name") or target.worker_name not in registry:
            raise NotAWorkerError(
                f"{target.__qualname__} is an abstract worker; it cannot run jobs"
            )
        return target, {}
    if isinstance(target, Worker):
        raise NotAWorkerError(
            f"enqueue takes the worker class, not an instance: use {type(target).__qualname__}"
        )
    raise NotAWorkerError(
        f"enqueue expects a toniq.Worker subclass or a @toniq.worker function, got {target!r}"
    )


_positional_ranges: dict[type[Worker], tuple[int, int] | None] = {}


def _positional_range(signature: inspect.Signature, method: bool) -> tuple[int, int] | None:
    """(fewest, most) positional arguments ``signature`` takes when called with positional
    arguments only, or None if it has keyword-only parameters or ``*args``: then only
    ``Signature.bind`` can tell (it costs several microseconds per job)."""
    params = list(signature.parameters.values())[1 if method else 0 :]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind not in kinds and p.kind is not inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    positional = [p for p in params if p.kind in kinds]
    required = sum(1 for p in positional if p.default is inspect.Parameter.empty)
    return required, len(positional)


def positional_fit(cls: type[Worker]) -> tuple[float, float]:
    """(fewest, most) positional arguments that fit ``cls``'s perform() when no keyword is
    given: any count if it has no signature to check, none (an empty range) if only
    ``Signature.bind`` can tell. Lets a loop check a job's arguments by their count."""
    signature = cls._toniq_signature
    if signature is None:
        return 0, math.inf
    try:
        fits = _positional_ranges[cls]
    except KeyError:
        method = not getattr(cls, "_toniq_is_function", False)
        fits = _positional_ranges[cls] = _positional_range(signature, method)
    return (1, 0) if fits is None else fits


def check_arguments(cls: type[Worker], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Fail at enqueue, not hours later in a node, when arguments do not fit perform()."""
    signature = cls._toniq_signature
    if signature is None:
        return
    if not kwargs:
        fewest, most = positional_fit(cls)
        if fewest <= len(args) <= most:
            return
    try:
        if getattr(cls, "_toniq_is_function", False):
            signature.bind(*args, **kwargs)
        else:
            signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"cannot enqueue {cls.worker_name}: {exc}") from None
