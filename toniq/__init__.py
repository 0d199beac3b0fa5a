"""toniq: simple and reliable background jobs for Python.

Define a worker, enqueue jobs, run a node::

    import toniq

    class SendEmail(toniq.Worker):
        def perform(self, to: str, subject: str) -> None:
            ...

    toniq.enqueue(SendEmail, to="info@example.com", subject="Hello")

and in a terminal: ``toniq worker myapp``.
"""

from toniq.__version__ import __version__
from toniq.app import (
    JobHandle,
    Toniq,
    configure,
    counts,
    delete,
    delete_all,
    enqueue,
    enqueue_async,
    enqueue_many,
    enqueue_many_async,
    failed_jobs,
    get_app,
    get_job,
    nodes,
    release,
    release_all,
    retry,
    retry_all,
    subscribe,
)
from toniq.errors import (
    ConfigurationError,
    EnqueueError,
    JobTimeout,
    MissingSecretError,
    NotAWorkerError,
    PayloadError,
    PayloadTooLargeError,
    SerializationError,
    StoreClosedError,
    StoreError,
    ToniqError,
    UnknownWorkerError,
)
from toniq.events import EventKind, JobEvent
from toniq.job import JobError, JobRecord, JobState, NodeInfo
from toniq.node import Node
from toniq.settings import Settings
from toniq.worker import EnqueueSpec, Worker, WorkerFunction, worker

__all__ = [
    "ConfigurationError",
    "EnqueueError",
    "EnqueueSpec",
    "EventKind",
    "JobError",
    "JobEvent",
    "JobHandle",
    "JobRecord",
    "JobState",
    "JobTimeout",
    "MissingSecretError",
    "Node",
    "NodeInfo",
    "NotAWorkerError",
    "PayloadError",
    "PayloadTooLargeError",
    "SerializationError",
    "Settings",
    "StoreClosedError",
    "StoreError",
    "Toniq",
    "ToniqError",
    "UnknownWorkerError",
    "Worker",
    "WorkerFunction",
    "__version__",
    "configure",
    "counts",
    "delete",
    "delete_all",
    "enqueue",
    "enqueue_async",
    "enqueue_many",
    "enqueue_many_async",
    "failed_jobs",
    "get_app",
    "get_job",
    "nodes",
    "release",
    "release_all",
    "retry",
    "retry_all",
    "subscribe",
    "worker",
]
