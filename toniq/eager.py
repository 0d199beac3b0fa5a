"""Running a coroutine's first step at once, and the rest under a task that already exists.

A node starts the ``async def`` jobs of a claim inside one task, one after the other (see
``Node._run_batch``): many jobs never wait for anything, and a Task each costs more than
many a job. Its creation, a callback scheduled on the loop and the loop's turn to run it
took 1.2 of the 8.2 us of CPU a node spent per no-op job. Python 3.12 has eager tasks for
this; 3.11 does not, and its Task cannot be made without being scheduled.

A job that does wait becomes that task's only job: the task is then the job's own, as
``asyncio.current_task()`` already said during its first step (``asyncio.timeout``,
``TaskGroup`` and cancellation all act on the right task). :class:`Resume` passes what the
job waits for up to the task and the task's wake-ups (and cancellation) down to the job.

Each job runs in its own :mod:`contextvars` context, as it would in a task of its own.
"""

from __future__ import annotations

import contextvars
from collections.abc import Coroutine, Generator
from typing import Any


class Resume:
    """``await Resume(coro, context, waiting)``: finish ``coro``, whose last step (run in
    ``context``) gave ``waiting``, as if the awaiting task had run it from the start.

    What ``coro`` waits for goes up to the task unchanged (a future with its
    ``_asyncio_future_blocking`` flag set, or ``None`` for a bare yield), so the task waits
    on it as it would for its own coroutine; the task's ``send``/``throw`` come back down.
    """

    __slots__ = ("_context", "_coro", "_waiting")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], context: contextvars.Context, waiting: Any
    ) -> None:
        self._coro = coro
        self._context = context
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, run, waiting = self._coro, self._context.run, self._waiting
        self._waiting = None
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:  # the task's coroutine was closed: close this one too
                run(coro.close)
                raise
            except BaseException as exc:  # cancellation: thrown into the job
                try:
                    waiting = run(coro.throw, exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = run(coro.send, sent)
                except StopIteration as stop:
                    return stop.value
