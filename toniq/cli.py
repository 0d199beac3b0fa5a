"""The ``toniq`` command (also ``python -m toniq``)."""

from __future__ import annotations

import base64
import gc
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from toniq.__version__ import __version__
from toniq.errors import PayloadError, ToniqError
from toniq.job import JobRecord

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


#: ``toniq worker --switch-interval``: see there.
SWITCH_INTERVAL = 0.0005
#: The cyclic garbage collector's thresholds in a ``toniq worker`` process (Python's are
#: 700, 10, 10): see :func:`worker`.
GC_THRESHOLD = (10_000, 10, 100)


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
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus metrics on this port (needs toniq[metrics]; docs/metrics.md).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
)
@click.option(
    "--summary-interval",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds between INFO lines summing up the jobs run (0: none).",
)
@click.option(
    "--switch-interval",
    type=click.FloatRange(min=0),
    default=SWITCH_INTERVAL,
    show_default=True,
    help="Seconds a thread of this process may hold the GIL while another waits for it "
    "(sys.setswitchinterval; 0 keeps Python's 0.005). Short, so that store replies reach a "
    "busy event loop at once.",
)
def worker(
    modules: tuple[str, ...],
    url: str | None,
    burst: bool,
    only: tuple[str, ...],
    threads: int | None,
    grace_period: float | None,
    log_level: str,
    metrics_port: int | None,
    metrics_host: str,
    summary_interval: float,
    switch_interval: float,
) -> None:
    """Run a node for the workers that MODULES define.

    Example: toniq worker myapp.jobs --burst
    """
    if switch_interval > 0:
        # A node's event loop is fed by its I/O thread (claims, acks). While the loop runs
        # jobs, a reply that thread has read waits for the GIL for up to Python's switch
        # interval (5 ms), often longer than the loop has work for: jobs/s fell by a fifth.
        sys.setswitchinterval(switch_interval)
    # Fewer full collections of the cyclic GC: each one walks every live object, and a node
    # running 100,000 jobs at once holds over a million; with Python's (700, 10, 10) they
    # took a third of the run (docs/settings.md). Set before the modules are imported, so
    # that a module may choose its own.
    gc.set_threshold(*GC_THRESHOLD)
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
        with _worker_extras(node, metrics_port, metrics_host, summary_interval):
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


def _app(url: str | None) -> Any:
    from toniq.app import Toniq, get_app

    return Toniq(url) if url else get_app()


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _record_dict(record: JobRecord, with_arguments: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": record.id,
        "worker": record.worker,
        "state": record.state.value,
        "attempt": record.attempt,
        "enqueued_at": record.enqueued_at,
        "run_at": "held" if record.held else record.run_at,
        "finished_at": record.finished_at,
        "errors": [error.to_dict() for error in record.errors],
    }
    if with_arguments:
        arguments, refused = _arguments(record)
        data["arguments"] = arguments
        if refused is not None:  # the raw bytes, for inspection: never unpickled
            data["payload_refused"] = refused
            data["payload_base64"] = base64.b64encode(record.payload).decode("ascii")
    return data


def _arguments(record: JobRecord) -> tuple[str | None, str | None]:
    """``(arguments as text, None)``, or ``(None, why the payload was refused)``: a payload
    is unpickled only once its signature is verified, as on a node."""
    try:
        args, kwargs = record.arguments()
    except PayloadError as exc:
        return None, str(exc)
    except ToniqError as exc:  # no key configured here, for instance
        return None, f"not verified: {exc}"
    except Exception as exc:  # verified, but an argument's class is not importable here
        return f"(cannot decode the arguments here: {type(exc).__name__}: {exc})", None
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return ", ".join(parts), None


#: Raw payload bytes shown by ``toniq failed show`` (``--json`` gives them all).
RAW_SHOWN = 200


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _failed_count(app: Any, worker: str | None) -> int:
    counts: dict[str, dict[str, int]] = app.counts()
    return sum(
        per.get("failed", 0) for name, per in counts.items() if worker is None or name == worker
    )


@main.group(invoke_without_command=True)
@click.option("--url", help="Where jobs are stored (default: TONIQ_URL, else ./toniq.sqlite3).")
@click.option("-w", "--worker", help="Only jobs of this worker (by name).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def failed(
    ctx: click.Context, url: str | None, worker: str | None, limit: int, offset: int, as_json: bool
) -> None:
    """List failed jobs, newest first; show, retry or delete them.

    \b
    toniq failed                      list: when, id, attempts, worker, last error
    toniq failed show ID              arguments and every attempt's error and traceback
    toniq failed retry ID... | --all  run again with a fresh attempt count
    toniq failed delete ID... | --all delete (bulk actions ask first, unless --yes)
    """
    ctx.obj = {"url": url}
    if ctx.invoked_subcommand is not None:
        return
    app = _app(url)
    records = app.failed_jobs(worker, limit, offset)
    if as_json:
        click.echo(json.dumps([_record_dict(r) for r in records], indent=2))
        return
    if not records:
        click.echo("no failed jobs" + (f" of {worker}" if worker else ""))
        return
    width = shutil.get_terminal_size((120, 20)).columns
    click.echo(f"{'FAILED AT':<19}  {'ID':<32}  {'ATTEMPTS':>8}  {'WORKER':<24}  LAST ERROR")
    for r in records:
        error = str(r.last_error) if r.last_error else "-"
        line = f"{_when(r.finished_at):<19}  {r.id:<32}  {r.attempt:>8}  {r.worker:<24}  "
        click.echo(line + _one_line(error, max(30, width - len(line))))
    total = _failed_count(app, worker)
    if total > offset + len(records):
        shown = offset + len(records)
        click.echo(f"({shown} of {total} shown; --offset {shown} for more)")


@failed.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def failed_show(obj: dict[str, Any], job_id: str, as_json: bool) -> None:
    """Print a job's arguments and every attempt's error with its traceback."""
    record = _app(obj["url"]).get_job(job_id)
    if record is None:
        raise click.ClickException(f"no job {job_id} in the store (done jobs are deleted)")
    if as_json:
        click.echo(json.dumps(_record_dict(record, with_arguments=True), indent=2))
        return
    click.echo(f"job {record.id}")
    click.echo(f"  worker     {record.worker}")
    click.echo(f"  state      {record.state.value}")
    click.echo(f"  attempts   {record.attempt}")
    click.echo(f"  enqueued   {_when(record.enqueued_at)}")
    click.echo(f"  finished   {_when(record.finished_at)}")
    arguments, refused = _arguments(record)
    if refused is None:
        click.echo(f"  arguments  {arguments}")
    else:
        raw = record.payload
        more = ""
        if len(raw) > RAW_SHOWN:
            more = f" ... ({len(raw) - RAW_SHOWN} more; --json has them all)"
        click.echo(f"  arguments  (refused, not unpickled: {refused})")
        click.echo(f"  payload    {len(raw)} bytes: {raw[:RAW_SHOWN]!r}{more}")
    for i, error in enumerate(record.errors, start=1):
        click.echo(
            f"\nerror {i} of {len(record.errors)}: attempt {error.attempt} "
            f"on {error.node or '-'} at {_when(error.at)}"
        )
        click.echo(f"  {error.type}: {error.message}")
        if error.traceback:
            click.echo("  " + error.traceback.rstrip().replace("\n", "\n  "))


def _bulk(
    obj: dict[str, Any],
    job_ids: tuple[str, ...],
    all_: bool,
    worker: str | None,
    yes: bool,
    retry: bool,
) -> None:
    verb, done_verb = ("retry", "retried") if retry else ("delete", "deleted")
    if job_ids and (all_ or worker):
        raise click.UsageError("give job ids, or --all (with an optional --worker), not both")
    if not job_ids and not all_:
        raise click.UsageError(f"give the id of a job to {verb}, or --all")
    app = _app(obj["url"])
    if job_ids:
        action = app.retry if retry else app.delete
        missing = [job_id for job_id in job_ids if not action(job_id)]
        click.echo(f"{done_verb} {len(job_ids) - len(missing)} job(s)")
        if missing:
            raise click.ClickException(f"not failed, or not found: {', '.join(missing)}")
        return
    count = _failed_count(app, worker)
    scope = f"failed jobs of {worker}" if worker else "failed jobs"
    if count == 0:
        click.echo(f"no {scope}")
        return
    if not yes:
        click.confirm(f"{verb.capitalize()} {count} {scope}?", abort=True)
    n = _bulk_all(app, worker, count, retry)
    click.echo(f"{done_verb} {n} job(s)")


#: Bulk actions on more failed jobs than this go by chunks of this many, with a progress bar.
BULK_CHUNK = 1000


def _bulk_all(app: Any, worker: str | None, count: int, retry: bool) -> int:
    """Retry or delete every failed job (of ``worker``); past :data:`BULK_CHUNK` jobs, by
    chunks with a progress bar on stderr. Stops after ``count`` (the number confirmed), so
    jobs that fail again meanwhile are not retried twice."""
    if count <= BULK_CHUNK:
        return int(app.retry_all(worker) if retry else app.delete_all(worker))
    from rich.console import Console
    from rich.progress import Progress

    action = app.backend.retry_failed if retry else app.backend.delete_failed
    total = 0
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("retrying" if retry else "deleting", total=count)
        while total < count:
            ids = [r.id for r in app.failed_jobs(worker, min(BULK_CHUNK, count - total))]
            n = int(action(ids)) if ids else 0
            if n == 0:
                break
            total += n
            progress.advance(task, n)
    return total


_ALL = click.option("--all", "all_", is_flag=True, help="Every failed job (of --worker).")
_WORKER = click.option("-w", "--worker", help="With --all: only jobs of this worker.")
_YES = click.option("-y", "--yes", is_flag=True, help="Do not ask before a bulk action.")


@failed.command("retry")
@click.argument("job_ids", nargs=-1)
@_ALL
@_WORKER
@_YES
@click.pass_obj
def failed_retry(
    obj: dict[str, Any], job_ids: tuple[str, ...], all_: bool, worker: str | None, yes: bool
) -> None:
    """Run failed jobs again, with a fresh attempt count (their errors are kept)."""
    _bulk(obj, job_ids, all_, worker, yes, retry=True)


@failed.command("delete")
@click.argument("job_ids", nargs=-1)
@_ALL
@_WORKER
@_YES
@click.pass_obj
def failed_delete(
    obj: dict[str, Any], job_ids: tuple[str, ...], all_: bool, worker: str | None, yes: bool
) -> None:
    """Delete failed jobs."""
    _bulk(obj, job_ids, all_, worker, yes, retry=False)


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


# -- toniq worker: banner, metrics endpoint, periodic summary ----------------------------------


@contextmanager
def _worker_extras(
    node: Any, metrics_port: int | None, metrics_host: str, summary_interval: float
) -> Iterator[None]:
    """What ``toniq worker`` adds around a node: the start-up banner, the metrics endpoint
    and the periodic INFO summary."""
    from toniq.status import ThroughputLog

    server = None
    metrics_at = None
    if metrics_port is not None:
        try:
            import toniq.metrics
        except ImportError as exc:
            raise click.ClickException(str(exc)) from exc
        try:
            server, _ = toniq.metrics.start_http_server(metrics_port, metrics_host, app=node.app)
        except OSError as exc:
            raise click.ClickException(
                f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}"
            ) from exc
        metrics_at = f"http://{metrics_host}:{server.server_port}/metrics"
    click.echo(banner(node, metrics_at, summary_interval), err=True)
    summary = ThroughputLog(node, summary_interval).start() if summary_interval > 0 else None
    try:
        yield
    finally:
        if summary is not None:
            summary.stop()
        if server is not None:
            server.shutdown()


def banner(node: Any, metrics_at: str | None = None, summary_interval: float = 0.0) -> str:
    """The lines ``toniq worker`` prints as it starts: store (password hidden), node,
    threads, workers with their concurrency, metrics endpoint and summary interval."""
    from toniq.settings import redact

    workers = node.worker_classes()
    width = max((len(name) for name in workers), default=0)
    lines = [
        f"toniq {__version__} worker",
        f"  store     {redact(node.app.url)}",
        f"  node      {node.id}",
        f"  threads   {node.settings.threads} (for `def perform` jobs)",
        f"  workers   {len(workers)}",
    ]
    for name, cls in sorted(workers.items()):
        limit = cls.worker_options.max_concurrency
        kind = "async" if cls.is_async else "thread"
        lines.append(
            f"    {name:<{width}}  {kind:<6}  max_concurrency "
            f"{'unlimited' if limit is None else limit}"
        )
    if metrics_at:
        lines.append(f"  metrics   {metrics_at}")
    if summary_interval > 0:
        lines.append(f"  summary   every {summary_interval:g}s at INFO")
    return "\n".join(lines)


# -- toniq status -------------------------------------------------------------------------------


@main.command()
@click.option("--url", help="Where jobs are stored (default: TONIQ_URL, else ./toniq.sqlite3).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (docs/status.md).")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    is_flag=False,
    flag_value=2.0,
    default=None,
    metavar="[SECONDS]",
    help="Refresh every SECONDS (default 2) until Ctrl-C.",
)
@click.option(
    "--window",
    type=click.IntRange(1, 60),
    default=60,
    show_default=True,
    help="Seconds of throughput to average.",
)
def status(url: str | None, as_json: bool, watch: float | None, window: int) -> None:
    """Show jobs per worker, live nodes and what they run, and jobs/s.

    \b
    toniq status                  one look
    toniq status --watch          refresh every 2 s (--watch 5: every 5 s)
    toniq status --json           for scripts
    """
    import time

    from rich.console import Console
    from rich.live import Live

    from toniq.status import render, snapshot

    app = _app(url)

    def look() -> Any:
        try:
            return snapshot(app, window=window)
        except ToniqError as exc:
            raise click.ClickException(str(exc)) from exc

    # Piped output is not cut to 80 columns: the tables take the width they need.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if watch is None:
        if as_json:
            click.echo(json.dumps(look().to_dict(), indent=2))
        else:
            console.print(render(look()))
        return
    try:
        if as_json:  # one JSON document per line
            while True:
                click.echo(json.dumps(look().to_dict()))
                time.sleep(watch)
        with Live(render(look()), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(watch)
                live.update(render(look()), refresh=True)
    except KeyboardInterrupt:
        pass


def _loopback(host: str) -> bool:
    """True only for addresses no other machine can reach."""
    if host.lower() == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@main.command()
@click.argument("modules", nargs=-1)
@click.option("--url", help="Where jobs are stored (default: TONIQ_URL, else ./toniq.sqlite3).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--user", envvar="TONIQ_WEB_USER", help="Basic-auth user name [TONIQ_WEB_USER].")
@click.option(
    "--password", envvar="TONIQ_WEB_PASSWORD", help="Basic-auth password [TONIQ_WEB_PASSWORD]."
)
@click.option(
    "--token",
    envvar="TONIQ_WEB_TOKEN",
    help="Bearer token, also accepted as the basic-auth password [TONIQ_WEB_TOKEN].",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between the overview's live updates.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
def web(
    modules: tuple[str, ...],
    url: str | None,
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    token: str | None,
    poll_interval: float,
    log_level: str,
) -> None:
    """Serve the dashboard: counts, running, scheduled and failed jobs; retry and delete.

    MODULES (optional) are imported first, so that job arguments of your own classes
    can be shown. Anywhere but on loopback it needs credentials: --user and --password,
    or --token (better from the environment: TONIQ_WEB_USER, TONIQ_WEB_PASSWORD,
    TONIQ_WEB_TOKEN).

    Example: toniq web --url redis://localhost:6379/0
    """
    try:
        import uvicorn

        from toniq.web import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its extra: pip install 'toniq[web]' ({exc})"
        ) from exc
    if (user is None) != (password is None):
        raise click.UsageError("give both --user and --password, or neither")
    if not _loopback(host) and password is None and token is None:
        raise click.ClickException(
            f"refusing to serve the dashboard on {host} without credentials: anyone who "
            "reaches it could retry and delete jobs. Set TONIQ_WEB_TOKEN, or "
            "TONIQ_WEB_USER and TONIQ_WEB_PASSWORD (or --token, --user/--password), "
            "or listen on 127.0.0.1."
        )
    _setup_logging(log_level.upper())
    for spec in modules:
        import_user_module(spec)
    from toniq.app import Toniq

    try:
        dashboard = create_app(
            Toniq(url) if url else None,
            username=user,
            password=password,
            token=token,
            poll_interval=poll_interval,
        )
    except (ValueError, ToniqError) as exc:
        raise click.ClickException(str(exc)) from exc
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"toniq dashboard on http://{shown}:{port}/ (Ctrl+C to stop)")
    uvicorn.run(dashboard, host=host, port=port, log_level=log_level.lower())


if __name__ == "__main__":  # pragma: no cover
    main()
