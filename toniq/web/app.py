"""The dashboard's pages and actions, as one Starlette app made by :func:`create_app`."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from toniq.app import Toniq, get_app
from toniq.job import JobRecord, JobState, NodeInfo
from toniq.web import present
from toniq.web.security import CSRF_COOKIE, CSRF_FIELD, Credentials, Csrf, Guard


def create_app(
    app: Toniq | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    secret: bytes | str | None = None,
    poll_interval: float = 2.0,
    chart_window: float = 300.0,
    page_size: int = 50,
) -> Starlette:
    """The dashboard as an ASGI app, for ``toniq web`` or to mount in your own app::

        from starlette.applications import Starlette
        from starlette.routing import Mount
        import toniq.web

        site = Starlette(routes=[Mount("/toniq", toniq.web.create_app(token="s3cret"))])

    ``app`` is the toniq app whose store it shows (default: :func:`toniq.get_app`, looked
    up on each request). ``username`` and ``password`` (HTTP basic authentication) and/or
    ``token`` (``Authorization: Bearer``, or basic authentication with the token as the
    password) lock it; without them anyone who reaches it may retry and delete jobs, so
    leave them out only behind your own authentication. ``secret`` signs the anti-forgery
    tokens: give the same one to every process that serves the dashboard (default: a
    random one per process). The overview polls the store every ``poll_interval`` seconds
    and charts the last ``chart_window`` seconds.
    """
    if poll_interval <= 0 or chart_window <= 0 or page_size < 1:
        raise ValueError("poll_interval and chart_window must be > 0, page_size >= 1")
    credentials = Credentials(username, password, token)
    dashboard = _Dashboard(app, Csrf(secret), poll_interval, chart_window, page_size)
    routes = [
        Route("/", dashboard.overview, name="overview"),
        Route("/api/stats", dashboard.stats, name="stats"),
        Route("/running", dashboard.running, name="running"),
        Route("/scheduled", dashboard.scheduled, name="scheduled"),
        Route("/queued", dashboard.queued, name="queued"),
        Route("/failed", dashboard.failed, name="failed"),
        Route("/failed/confirm", dashboard.confirm, name="confirm"),
        Route("/failed/retry", dashboard.retry, methods=["POST"], name="retry"),
        Route("/failed/delete", dashboard.delete, methods=["POST"], name="delete"),
        Route("/jobs/{job_id}", dashboard.job, name="job"),
        Route("/jobs/{job_id}/release", dashboard.release, methods=["POST"], name="release"),
        Mount("/static", StaticFiles(packages=[("toniq.web", "static")]), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(Guard, credentials=credentials)],
        exception_handlers={HTTPException: dashboard.http_error},  # type: ignore[dict-item]
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("toniq.web", "templates"),
        autoescape=True,  # every argument, error and traceback is user data
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=present.when, iso=present.iso, ago=present.ago, until=present.until)
    env.globals.update(kind=present.kind, span=present.span)
    return env


class _Dashboard:
    def __init__(
        self,
        app: Toniq | None,
        csrf: Csrf,
        poll_interval: float,
        chart_window: float,
        page_size: int,
    ) -> None:
        self._app = app
        self.csrf = csrf
        self.poll_interval = poll_interval
        self.page_size = page_size
        self.sampler = present.RateSampler(window=chart_window, min_gap=poll_interval / 2)
        self.templates = Jinja2Templates(env=_environment())

    @property
    def toniq(self) -> Toniq:
        return self._app if self._app is not None else get_app()

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Every backend call blocks (SQLite, Redis): keep it off the event loop.
        return await run_in_threadpool(fn, *args)

    def _render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        token = self.csrf.token_for(request)

        def path(route: str, query: dict[str, Any] | None = None, **params: Any) -> str:
            url = str(request.url_for(route, **params).path)
            given = {k: v for k, v in (query or {}).items() if v not in (None, "")}
            return f"{url}?{urlencode(given)}" if given else url

        context.setdefault("nav", name.removesuffix(".html"))
        context.update(
            path=path,
            csrf_field=CSRF_FIELD,
            csrf_token=token,
            poll_interval=self.poll_interval,
            now=time.time(),
        )
        response = self.templates.TemplateResponse(request, name, context, status_code=status_code)
        if request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                path=request.scope.get("root_path") or "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    async def _counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = await self._call(self.toniq.counts)
        return counts

    def _offset(self, request: Request) -> int:
        try:
            return max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            return 0

    # -- pages ---------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        counts = await self._counts()
        nodes: list[NodeInfo] = await self._call(self.toniq.nodes)
        running: list[JobRecord] = await self._call(self.toniq.jobs, JobState.RUNNING, None, 1000)
        per_node = Counter(job.node for job in running)
        return self._render(
            request,
            "overview.html",
            counts=counts,
            totals=present.totals(counts),
            nodes=sorted(nodes, key=lambda n: n.started_at),
            per_node=per_node,
            window_label=present.window_label(self.sampler.window),
        )

    async def stats(self, request: Request) -> Response:
        """The overview's live data: counts, totals, nodes and the jobs-per-second series."""
        counts = await self._counts()
        nodes: list[NodeInfo] = await self._call(self.toniq.nodes)
        now = time.time()
        totals = present.totals(counts)
        self.sampler.add(now, totals["done"])
        return JSONResponse(
            {
                "time": now,
                "counts": counts,
                "totals": totals,
                "nodes": len(nodes),
                "rate": self.sampler.series(),
                "window": self.sampler.window,
            }
        )

    async def running(self, request: Request) -> Response:
        offset = self._offset(request)
        jobs: list[JobRecord] = await self._call(
            self.toniq.jobs, JobState.RUNNING, None, self.page_size, offset
        )
        nodes = {node.id: node for node in await self._call(self.toniq.nodes)}
        counts = await self._counts()
        return self._render(
            request,
            "running.html",
            jobs=[(job, present.arguments(job, 200)[0]) for job in jobs],
            nodes=nodes,
            offset=offset,
            total=present.totals(counts)["running"],
            page_size=self.page_size,
        )

    async def scheduled(self, request: Request) -> Response:
        return await self._queue(request, JobState.SCHEDULED, "scheduled")

    async def queued(self, request: Request) -> Response:
        return await self._queue(request, JobState.AVAILABLE, "queued")

    async def _queue(self, request: Request, state: JobState, route: str) -> Response:
        offset = self._offset(request)
        worker = request.query_params.get("worker") or None
        jobs: list[JobRecord] = await self._call(
            self.toniq.jobs, state, worker, self.page_size, offset
        )
        counts = await self._counts()
        return self._render(
            request,
            "queue.html",
            state=state.value,
            route=route,
            nav=route,
            jobs=[(job, present.arguments(job, 200)[0]) for job in jobs],
            worker=worker,
            workers=sorted(w for w, per in counts.items() if per.get(state.value)),
            offset=offset,
            total=_total(counts, state.value, worker),
            page_size=self.page_size,
        )

    async def failed(self, request: Request) -> Response:
        offset = self._offset(request)
        worker = request.query_params.get("worker") or None
        jobs: list[JobRecord] = await self._call(
            self.toniq.failed_jobs, worker, self.page_size, offset
        )
        counts = await self._counts()
        return self._render(
            request,
            "failed.html",
            jobs=[(job, present.arguments(job, 300)[0]) for job in jobs],
            worker=worker,
            workers=sorted(w for w, per in counts.items() if per.get("failed")),
            offset=offset,
            total=_total(counts, "failed", worker),
            page_size=self.page_size,
            retried=_int(request.query_params.get("retried")),
            deleted=_int(request.query_params.get("deleted")),
        )

    async def confirm(self, request: Request) -> Response:
        """Asks before retrying or deleting every failed job (of one worker)."""
        action = request.query_params.get("action")
        if action not in ("retry", "delete"):
            raise HTTPException(400, "action must be retry or delete")
        worker = request.query_params.get("worker") or None
        counts = await self._counts()
        return self._render(
            request,
            "confirm.html",
            action=action,
            worker=worker,
            count=_total(counts, "failed", worker),
        )

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        record: JobRecord | None = await self._call(self.toniq.get_job, job_id)
        if record is None:
            return self._render(request, "missing.html", status_code=404, job_id=job_id)
        text, decoded = present.arguments(record)
        nodes = {node.id: node for node in await self._call(self.toniq.nodes)}
        return self._render(
            request,
            "job.html",
            job=record,
            arguments=text,
            decoded=decoded,
            nodes=nodes,
            errors=list(reversed(record.errors)),
        )

    # -- actions -------------------------------------------------------------------------

    async def _form(self, request: Request) -> Any:
        form = await request.form()
        field = form.get(CSRF_FIELD)
        refused = self.csrf.check(request, field if isinstance(field, str) else None)
        if refused is not None:
            raise HTTPException(403, f"refused: {refused}. Reload the page and try again.")
        return form

    async def retry(self, request: Request) -> Response:
        return await self._act(request, retry=True)

    async def delete(self, request: Request) -> Response:
        return await self._act(request, retry=False)

    async def _act(self, request: Request, retry: bool) -> Response:
        form = await self._form(request)
        ids = [v for v in form.getlist("ids") if isinstance(v, str) and v]
        worker = form.get("worker") or None
        if form.get("scope") == "all":
            if form.get("confirm") != "yes":
                raise HTTPException(400, "retrying or deleting every job needs confirm=yes")
            if retry:
                n = await self._call(self.toniq.retry_all, worker)
            else:
                n = await self._call(self.toniq.delete_all, worker)
        elif ids:
            toniq = self.toniq

            def act() -> int:  # opening the backend may block too
                backend = toniq.backend
                return backend.retry_failed(ids) if retry else backend.delete_failed(ids)

            n = await self._call(act)
        else:
            raise HTTPException(400, "no job selected")
        query = urlencode(_given({"retried" if retry else "deleted": n, "worker": worker}))
        if form.get("back") == "job" and retry and len(ids) == 1:
            back = str(request.url_for("job", job_id=ids[0]).path)  # watch it run
        else:
            back = str(request.url_for("failed").path)
        return RedirectResponse(f"{back}?{query}", status_code=303)

    async def release(self, request: Request) -> Response:
        await self._form(request)
        job_id = request.path_params["job_id"]
        await self._call(self.toniq.release, job_id)
        return RedirectResponse(str(request.url_for("job", job_id=job_id).path), status_code=303)

    async def http_error(self, request: Request, exc: HTTPException) -> Response:
        if exc.status_code in (403, 400) and request.method == "POST":
            return PlainTextResponse(f"{exc.status_code}: {exc.detail}\n", exc.status_code)
        return self._render(request, "error.html", status_code=exc.status_code, detail=exc.detail)


def _total(counts: dict[str, dict[str, int]], state: str, worker: str | None) -> int:
    return sum(per.get(state, 0) for w, per in counts.items() if worker is None or w == worker)


def _given(query: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in query.items() if v not in (None, "")}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
