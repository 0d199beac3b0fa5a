"""The ``toniq`` command (also ``python -m toniq``)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from toniq.__version__ import __version__
from toniq.errors import ToniqError

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def import_user_module(spec: str) -> None:
    """Import ``package.module`` or ``path/to/file.py`` so its workers register."""
    # Like `python -m`, let the user's own modules in the working directory be found.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if spec.endswith(".py") or os.sep in spec:
            path = Path(spec)
            if not path.is_file():
                raise click.UsageError(f"no such file: {spec}")
            sys.path.insert(0, str(path.resolve().parent))
            importlib.import_module(path.stem)
        else:
            importlib.import_module(spec)
    except click.UsageError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise click.UsageError(
                f"cannot import {spec!r}: no module named {exc.name!r} "
                f"(run toniq from the directory that contains it, or set PYTHONPATH)"
            ) from exc
        raise


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="toniq")
def main() -> None:
    """toniq: simple and reliable background jobs.

    The store is chosen by --url or TONIQ_URL (sqlite:///path, memory://);
    without either, jobs are stored in ./toniq.sqlite3.
    """


@main.command()
@click.argument("modules", nargs=-1, required=True)
@click.option(
    "--url",
    help="Where jobs are stored. Default: what MODULES configured, else TONIQ_URL, "
    "else sqlite:///toniq.sqlite3.",
)
@click.option("--burst", is_flag=True, help="Exit once no job is left to run.")
@click.option(
    "-w",
    "--worker",
    "only",
    multiple=True,
    help="Run only this worker (by name); repeat for more. Default: all.",
)
@click.option("--threads", type=click.IntRange(min=1), help="Threads for `def perform` jobs.")
@click.option(
    "--grace-period",
    type=click.FloatRange(min=0),
    help="Seconds running jobs get to finish on SIGTERM/SIGINT.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
def worker(
    modules: tuple[str, ...],
    url: str | None,
    burst: bool,
    only: tuple[str, ...],
    threads: int | None,
    grace_period: float | None,
    log_level: str,
) -> None:
    """Run a node for the workers that MODULES define.

    Example: toniq worker myapp.jobs --burst
    """
    from toniq.app import configure
    from toniq.node import Node
    from toniq.worker import registry

    _setup_logging(log_level.upper())
    for spec in modules:
        import_user_module(spec)
    if not registry:
        raise click.UsageError(f"{', '.join(modules)} defines no toniq workers")
    overrides: dict[str, Any] = {}
    if threads is not None:
        overrides["threads"] = threads
    if grace_period is not None:
        overrides["grace_period"] = grace_period
    try:
        app = configure(url) if url else _default_app()
        node = Node(app, workers=list(only) or None, **overrides)
        node.run(burst=burst)
    except ToniqError as exc:
        raise click.ClickException(str(exc)) from exc
    if node.busy_threads:
        # A `def` job still running after the grace period was handed back already; Python
        # cannot stop its thread, and waiting would keep a duplicate run alive. Exit now,
        # as if killed: the job runs again elsewhere.
        logging.getLogger("toniq").warning(
            "exiting without waiting for %d job thread(s); their jobs were handed back",
            node.busy_threads,
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _default_app() -> Any:
    from toniq.app import get_app

    return get_app()


@main.command()
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="How many jobs the demo enqueues.",
)
@click.option("--url", help="Store to use (default: a fresh SQLite file in a temp directory).")
def demo(jobs: int, url: str | None) -> None:
    """Show toniq at work in a few seconds."""
    from toniq.demo import run_demo

    sys.exit(run_demo(jobs=jobs, url=url))


if __name__ == "__main__":  # pragma: no cover
    main()
