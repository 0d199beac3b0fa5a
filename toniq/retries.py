"""When a failed run is retried, and when a job gives up."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta

from toniq.job import JobError
from toniq.settings import Settings
from toniq.worker import Worker

logger = logging.getLogger("toniq")


def default_backoff(attempt: int) -> float:
    """Seconds before retry ``attempt``: attempt⁴ × 0.25 s (0.25, 4, 20.25, 64, 156.25 …)
    plus up to 10 % jitter, so a burst of failures does not retry in lockstep."""
    base = attempt**4 * 0.25
    return base + random.uniform(0.0, base * 0.1)


def retries_for(worker: type[Worker], settings: Settings) -> int:
    """The worker's own ``retries``, else the app's."""
    own = worker.worker_options.retries
    return settings.retries if own is None else own


def backoff_for(worker: type[Worker], settings: Settings) -> Callable[[int], float]:
    return worker.worker_options.backoff or settings.backoff or default_backoff


def retry_delay(worker: type[Worker], settings: Settings, attempt: int) -> float | None:
    """Seconds to wait before the next run after failed run ``attempt`` (1-based), or
    ``None`` once the retries are used up."""
    if attempt > retries_for(worker, settings):
        return None
    delay = float(backoff_for(worker, settings)(attempt))
    return max(0.0, delay)


def log_failure(
    job_id: str,
    worker: str,
    attempt: int,
    retries: int,
    error: JobError,
    retry_in: float | None,
    exc: BaseException,
) -> None:
    """One WARNING per run that will be retried, one ERROR (with the traceback) when the
    job gives up: error trackers that read ``logging`` report a job once."""
    runs = retries + 1
    if retry_in is not None:
        at = datetime.now() + timedelta(seconds=retry_in)
        logger.warning(
            "job %s (%s) failed on attempt %d of %d: %s; retrying in %.2fs (at %s)",
            job_id,
            worker,
            attempt,
            runs,
            error,
            retry_in,
            at.strftime("%H:%M:%S"),
        )
    else:
        logger.error(
            "job %s (%s) failed on attempt %d of %d, no retries left: %s",
            job_id,
            worker,
            attempt,
            runs,
            error,
            exc_info=exc,
        )
