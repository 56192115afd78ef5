"""The dashboard's web application (Starlette): pages, a JSON API, a server-sent event stream
and the few actions, behind the guards.

Guards, outermost first: a password when one is configured (constant-time compare) and
security headers on every answer (a CSP that allows only our own scripts); the Host header
must name the address we serve (against DNS rebinding; ``allowed_hosts``). Every
action is a JSON POST that must carry the page's CSRF token and come from our own Origin.
Pages hold no task data: the browser renders it from the API as text, never as markup.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import re
import secrets
import socket
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable

import psutil
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from engine.dashboard import fleet
from engine.dashboard.detail import task_detail
from engine.dashboard.monitor import STATES, Monitor

if TYPE_CHECKING:
    from engine.app import Engine

HERE = Path(__file__).resolve().parent

#: seconds between two overview pushes on the event stream
PUSH_INTERVAL = 1.0
#: seconds of throughput the overview chart shows
CHART_WINDOW = 300

_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
     b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class Guard:
    """ASGI middleware: basic auth when ``credentials`` is set, and security headers."""

    def __init__(self, app: Any, credentials: tuple[str, str] | None) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(event: dict) -> None:
            if event["type"] == "http.response.start":
                names = {name for name, _ in event.get("headers", [])}
                event["headers"] = [*event.get("headers", []),
                                    *[h for h in _HEADERS if h[0] not in names]]
            await send(event)

        if self.credentials and not self._authorized(scope):
            response = Response("password required\n", status_code=401, media_type="text/plain",
                                headers={"WWW-Authenticate": 'Basic realm="engine dashboard", '
                                                             'charset="UTF-8"'})
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _authorized(self, scope: dict) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, value = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        want_user, want_password = (part.encode() for part in self.credentials)
        # both compares always run, so the time taken tells nothing about which one failed
        ok_user = hmac.compare_digest(user, want_user)
        ok_password = hmac.compare_digest(password, want_password)
        return bool(sep) and ok_user and ok_password


def parse_credentials(text: str | None) -> tuple[str, str] | None:
    """``user:password`` -> (user, password); ValueError when it has no colon or no password."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not password:
        raise ValueError("--basic-auth takes user:password (and the password cannot be empty)")
    return user, password


#: Host names of the loopback interface (an IPv6 literal keeps its brackets in a Host header)
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]


def is_loopback(address: str) -> bool:
    """True for ``localhost`` and loopback IP addresses."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(address: str, *, extra: Iterable[str] = ()) -> list[str]:
    """Host header values accepted when bound to ``address``: the address itself and the
    loopback names, plus ``extra`` (names a proxy in front uses; ``*.example.com``
    patterns; ``*`` turns the check off). A wildcard bind (``0.0.0.0``, ``::``) stands for
    this machine's names and the addresses of its interfaces. A request naming any other
    host gets 400: a DNS-rebinding page cannot reach the dashboard under a name of its own.
    ValueError for a pattern TrustedHostMiddleware would refuse."""
    hosts = list(LOOPBACK_HOSTS)
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        hosts.append(address.lower())   # a host name
    else:
        if ip.is_unspecified:
            hosts.extend(_machine_hosts())
        else:
            hosts.append(_host_of(ip))
    for pattern in extra:
        pattern = pattern.strip().lower()
        if "*" in pattern[1:] or (pattern.startswith("*") and pattern not in ("*",)
                                  and not pattern.startswith("*.")):
            raise ValueError(f"--allowed-host {pattern!r}: a pattern is '*.example.com' "
                             f"(or '*' for any host)")
        if pattern:
            hosts.append(pattern)
    return list(dict.fromkeys(hosts))


def _machine_hosts() -> list[str]:
    """This machine's host names and the addresses of its interfaces, as Host headers."""
    names = [socket.gethostname().lower(), socket.getfqdn().lower()]
    for addresses in psutil.net_if_addrs().values():
        for entry in addresses:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    ip = ipaddress.ip_address(entry.address)
                except ValueError:
                    continue
                # a link-local IPv6 address carries its zone (fe80::1%eth0): no Host header
                # names that
                if not getattr(ip, "scope_id", None):
                    names.append(_host_of(ip))
    return [name for name in names if name]


def _host_of(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{ip}]" if ip.version == 6 else str(ip)


class Dashboard:
    """Handlers bound to one Engine app, its event monitor and this process's CSRF token."""

    def __init__(self, engine: "Engine", *, prefix: str = "") -> None:
        self.engine = engine
        self.prefix = prefix
        self.monitor = Monitor(engine)
        self.csrf_token = secrets.token_urlsafe(32)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    # -- pages -------------------------------------------------------------------------
    def page(self, name: str, page: str, **context: Any):
        async def handler(request: Request) -> Response:
            values = {"csrf_token": self.csrf_token, "page": page, "app_name": self.engine.main,
                      "states": STATES, "prefix": self.prefix, **context,
                      **dict(request.path_params)}
            return self.templates.TemplateResponse(request, name, values)
        return handler

    # -- reading -----------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        return {"workers": fleet.workers(self.engine), "queues": fleet.queues(self.engine),
                "flow": fleet.flow_state(self.engine),
                "throughput": self.monitor.throughput(seconds=CHART_WINDOW),
                "totals": dict(self.monitor.totals), "version": self.monitor.version}

    async def api_overview(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.overview))

    async def api_tasks(self, request: Request) -> Response:
        q = request.query_params
        state = q.get("state", "")
        if state and state not in STATES:
            raise HTTPException(400, f"unknown state {state!r}")
        page = _int(q.get("page"), 1)
        per_page = min(max(_int(q.get("per_page"), 50), 1), 500)
        return JSONResponse(self.monitor.task_list(state=state, name=q.get("name", ""),
                                                   page=page, per_page=per_page))

    def task_detail(self, task_id: str) -> dict[str, Any] | None:
        return task_detail(self.engine, self.monitor, task_id)

    async def api_task(self, request: Request) -> Response:
        detail = await run_in_threadpool(self.task_detail, request.path_params["task_id"])
        if detail is None:
            return JSONResponse({"error": "no such task in events or results"}, status_code=404)
        return JSONResponse(detail)

    async def api_dead(self, request: Request) -> Response:
        queue = request.path_params["queue"]
        before = request.query_params.get("before") or None
        if before is not None and not _is_entry_id(before):
            raise HTTPException(400, "bad entry id")
        return JSONResponse(await run_in_threadpool(fleet.dead_letters, self.engine, queue,
                                                    before=before))

    async def stream(self, request: Request) -> Response:
        """Server-sent events: ``overview`` every PUSH_INTERVAL, ``tasks`` when tasks changed."""
        async def events() -> AsyncIterator[bytes]:
            version = -1
            yield b"retry: 2000\n\n"
            while True:
                overview = await run_in_threadpool(self.overview)
                yield _sse("overview", overview)
                if overview["version"] != version:
                    version = overview["version"]
                    yield _sse("tasks", {"version": version})
                await asyncio.sleep(PUSH_INTERVAL)
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    # -- actions -----------------------------------------------------------------------
    async def checked_body(self, request: Request) -> dict[str, Any]:
        """The JSON body of an action, once it passed the cross-site request checks."""
        expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
        origin = request.headers.get("origin")
        if origin is None:
            referer = request.headers.get("referer", "")
            if not referer.startswith(expected + "/"):
                raise HTTPException(403, "cross-site request refused (no matching Origin)")
        elif origin != expected:
            raise HTTPException(403, "cross-site request refused (Origin mismatch)")
        token = request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(token.encode(), self.csrf_token.encode()):
            raise HTTPException(403, "cross-site request refused (bad CSRF token)")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise HTTPException(415, "actions take application/json")
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            raise HTTPException(400, "bad JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "expected a JSON object")
        return body

    async def requeue(self, request: Request) -> Response:
        await self.checked_body(request)
        queue, entry = request.path_params["queue"], request.path_params["entry"]
        if not _is_entry_id(entry):
            raise HTTPException(400, "bad entry id")
        refusal = await run_in_threadpool(fleet.requeue_dead_letter, self.engine, queue, entry)
        if refusal:
            return JSONResponse({"ok": False, "error": refusal},
                                status_code=404 if refusal.startswith("no such") else 409)
        return JSONResponse({"ok": True, "message": f"requeued {entry} on {queue}"})

    async def delete_dead(self, request: Request) -> Response:
        await self.checked_body(request)
        queue, entry = request.path_params["queue"], request.path_params["entry"]
        if not _is_entry_id(entry):
            raise HTTPException(400, "bad entry id")
        done = await run_in_threadpool(fleet.delete_dead_letter, self.engine, queue, entry)
        if not done:
            return JSONResponse({"ok": False, "error": "no such dead letter"}, status_code=404)
        return JSONResponse({"ok": True, "message": f"deleted {entry} from {queue}"})

    async def worker_action(self, request: Request) -> Response:
        body = await self.checked_body(request)
        name, verb = request.path_params["name"], request.path_params["verb"]
        fields: dict[str, Any] = {}
        if verb in ("pool-grow", "pool-shrink"):
            n = body.get("n", 1)
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10000:
                raise HTTPException(400, "n must be a whole number from 1 to 10000")
            fields["n"] = n
            if body.get("lane"):
                fields["lane"] = str(body["lane"])
        elif verb != "shutdown":
            raise HTTPException(404, f"unknown action {verb!r}")
        if not await run_in_threadpool(fleet.worker_known, self.engine, name):
            return JSONResponse({"ok": False, "error": f"no such worker {name!r}"},
                                status_code=404)
        try:
            text = await run_in_threadpool(fleet.send_control, self.engine, verb,
                                           destination=name, **fields)
        except fleet.ControlError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=409)
        return JSONResponse({"ok": True, "message": text})

    async def revoke(self, request: Request) -> Response:
        body = await self.checked_body(request)
        task_id = body.get("id")
        if not isinstance(task_id, str) or not task_id.strip() or len(task_id) > 200:
            raise HTTPException(400, "give the task id to revoke")
        terminate = bool(body.get("terminate"))
        await run_in_threadpool(fleet.revoke, self.engine, task_id.strip(), terminate=terminate)
        return JSONResponse({"ok": True, "message": f"revoked {task_id.strip()}"
                             + (" (terminate)" if terminate else "")})

    # -- the application ---------------------------------------------------------------
    def routes(self) -> list:
        return [
            Route("/", self.page("overview.html", "overview")),
            Route("/tasks", self.page("tasks.html", "tasks")),
            # ``path``: a task id may hold slashes (links quote them, and the server gets
            # the decoded path)
            Route("/tasks/{task_id:path}", self.page("task.html", "task")),
            Route("/queues", self.page("queues.html", "queues")),
            Route("/workers", self.page("workers.html", "workers")),
            Route("/api/overview", self.api_overview),
            Route("/api/tasks", self.api_tasks),
            Route("/api/tasks/{task_id:path}", self.api_task),
            Route("/api/queues/{queue}/dead", self.api_dead),
            Route("/api/queues/{queue}/dead/{entry}/requeue", self.requeue, methods=["POST"]),
            Route("/api/queues/{queue}/dead/{entry}/delete", self.delete_dead, methods=["POST"]),
            Route("/api/workers/{name}/{verb}", self.worker_action, methods=["POST"]),
            Route("/api/revoke", self.revoke, methods=["POST"]),
            Route("/api/stream", self.stream),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]


def create_app(engine: "Engine", *, credentials: tuple[str, str] | None = None,
               address: str = "127.0.0.1", hosts: list[str] | None = None,
               prefix: str = "") -> Starlette:
    """The application; it accepts the Host names ``hosts`` (default: ``allowed_hosts`` of
    ``address``) and serves every path under ``prefix`` (``parse_prefix``; "" for /)."""
    prefix = parse_prefix(prefix)
    dashboard = Dashboard(engine, prefix=prefix)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        dashboard.monitor.start()
        try:
            yield
        finally:
            dashboard.monitor.stop()

    # under a prefix, only its paths exist: a page that forgot it fails loudly (404)
    routes = [Mount(prefix, routes=dashboard.routes())] if prefix else dashboard.routes()
    web = Starlette(routes=routes, lifespan=lifespan, middleware=[
        Middleware(Guard, credentials=credentials),
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts or allowed_hosts(address),
                   www_redirect=False),
    ])
    web.state.dashboard = dashboard
    return web


_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)+")


def parse_prefix(text: str | None) -> str:
    """``--url-prefix``: "" or "/" for none, else a path such as ``/ops/engine`` (a trailing
    slash is dropped); ValueError for anything else (a prefix is put into every link)."""
    prefix = (text or "").strip().rstrip("/")
    if not prefix:
        return ""
    if not _PREFIX.fullmatch(prefix) or any(p in (".", "..") for p in prefix.split("/")):
        raise ValueError(f"--url-prefix {text!r}: expected a path such as /ops/engine "
                         f"(letters, digits and . _ ~ - between slashes)")
    return prefix


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def _is_entry_id(text: str) -> bool:
    ms, _, seq = text.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit()) and len(text) < 45
