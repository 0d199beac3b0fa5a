"""Running a job under a timeout, for real.

- ``async def`` jobs are cancelled at their timeout (``asyncio.timeout``).
- ``def`` jobs with a timeout run in a child process (forked, so it has every worker
  the node registered) which is SIGKILLed at the timeout: a thread cannot be stopped
  from outside in Python, and a job must never be reported as timed out while it keeps
  running unseen. Without a timeout, ``def`` jobs run in the node's thread pool.
"""

from __future__ import annotations

import asyncio
import os
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from toniq.errors import JobProcessError, JobTimeout
from toniq.job import TIMEOUT, type_name

if TYPE_CHECKING:
    from multiprocessing.connection import Connection


def timeout_error(seconds: float, how: str) -> JobTimeout:
    error = JobTimeout(f"the run exceeded its timeout of {seconds:g}s and was {how}")
    error.toniq_error = (TIMEOUT, str(error), "")
    return error


async def run_async(call: Callable[[], Awaitable[Any]], seconds: float | None) -> None:
    if seconds is None:
        await call()
        return
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            await call()
    except TimeoutError:
        if scope.expired():
            raise timeout_error(seconds, "cancelled") from None
        raise  # the job's own TimeoutError


def run_in_child(func: Callable[[], Any], seconds: float) -> None:
    """Run ``func`` in a forked child; kill it after ``seconds``. Blocks (call it from a
    thread). Re-raises the child's error as :class:`JobProcessError`."""
    import multiprocessing  # here: most nodes never fork a job, and it costs 4 ms to import

    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(func, writer), daemon=True)
    child.start()
    writer.close()
    try:
        if not reader.poll(seconds):
            child.kill()
            child.join()
            raise timeout_error(seconds, "killed (it ran in a child process)")
        try:
            result = reader.recv()
        except EOFError:
            child.join()
            raise JobProcessError(
                "toniq.JobProcessDied",
                f"the job's process died without a result (exit code {child.exitcode})",
                "",
            ) from None
    finally:
        reader.close()
    child.join()
    if result[0] != "ok":
        _, name, message, trace = result
        raise JobProcessError(name, message, trace)


def _child_main(func: Callable[[], Any], writer: Connection) -> None:
    try:
        func()
        writer.send(("ok",))
    except BaseException as exc:
        writer.send(("error", type_name(exc), str(exc), "".join(traceback.format_exception(exc))))
    finally:
        writer.close()
        os._exit(0)  # skip the parent's atexit handlers and thread joins
