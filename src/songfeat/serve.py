"""`songfeat serve`: Spotify's audio-features endpoints over your own music library (FastAPI + uvicorn).

A thin HTTP skin over `songfeat.library.Library`: it checks the token and the ids, reads results from
the index, turns the library's states into Spotify's statuses (503 + Retry-After while a file waits
for analysis), streams uploads to disk under a size cap, and exports Prometheus metrics. It holds no
analysis logic. Every error, FastAPI's own 404/405/422 included, is `{"error": {"status", "message"}}`. CORS is off
unless origins are given (`cors_origins`, `--cors-origin`). Requests that change something (uploads, rescans) are
refused when a browser says another origin's page sent them (`cross_origin_refusal`): such a page can send a form's POST
without CORS's consent, and without a token the server would act on it. Served on a loopback address, it answers only
requests addressed to a loopback name (`TrustedHosts`, `--allowed-host` for others): a page whose own name was pointed at
127.0.0.1 (DNS rebinding) is same-origin to it, and would otherwise read and post as the user. `app_from_env` is the
same app for another ASGI server (`uvicorn songfeat.serve:app_from_env --factory`), its settings from SONGFEAT_* variables.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .audio import AUDIO_EXTENSIONS
from .http_protocol import absolute_form, body_length, head_refusal, uvicorn_options
from . import serve_options
from .library import AnalysisFailed, Library, TransientFailure, failure_note, is_valid_id, stage_upload

MAX_IDS = 100  # Spotify's limit per batch request
WAIT_SECONDS = 60.0  # longest a `?wait=true` request is held before it gets its 503
INDEXING = "the library's first scan since the server started is still running"  # why an unknown id is a 503 meanwhile
INDEXING_RETRY = 5  # Retry-After (s) for an id the index lacks while that scan runs
INDEXING_POLL = 0.25  # seconds between looks at the index for such an id, with ?wait=true
UPLOAD_MB = serve_options.default("max-upload-mb")  # `songfeat serve --max-upload-mb`'s, also `create_app`'s
MULTIPART_SLACK = 1 << 20  # bytes of multipart framing and form fields allowed beyond the file cap
UPLOADS_PER_WORKER = 4  # uploads in flight beyond workers x this get 429: bounded disk and queue under load
CHUNK = 1 << 16
BODY_IDLE_SECONDS = 60.0  # an upload that sends nothing for this long gets 408 (nginx's client_body_timeout)
BODY_MIN_RATE = 500  # bytes/s: an upload has BODY_IDLE_SECONDS plus a second per this many bytes (Apache's MinRate)
DRAIN_BYTES = 64 << 10  # an unread body of a refused request up to this Content-Length is read and dropped, the
DRAIN_SECONDS = 1.0  # connection kept, if it arrives within this long; a larger, chunked or slower one closes it
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})  # others share one metrics label
CONTENT_TYPES = {"audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav",
                 "audio/flac": ".flac", "audio/x-flac": ".flac", "audio/ogg": ".ogg", "audio/opus": ".opus",
                 "audio/mp4": ".m4a", "audio/x-m4a": ".m4a", "audio/aac": ".aac", "audio/aiff": ".aiff",
                 "audio/x-aiff": ".aiff", "audio/webm": ".webm"}
CORS_METHODS = ("GET", "HEAD", "OPTIONS")  # Spotify's read routes; uploads and rescans stay same-origin
SAFE_METHODS = frozenset(CORS_METHODS)  # change nothing: any page may send them; every other method is same-origin only
SAME_ORIGIN_FETCH = ("same-origin", "none")  # Sec-Fetch-Site of a page's own requests, and of ones the user typed
DEFAULT_PORTS = {"http": 80, "https": 443}  # a browser's Origin header leaves these out
ORIGIN_HOST = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?|[0-9a-f:.]*:[0-9a-f:.]*")  # a name or an IPv6 address, lower case
HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")  # an --allowed-host name, lower case, '*.' for a domain's names
LOOPBACK_NAMES = ("localhost", "*.localhost")  # names no DNS answers for (RFC 6761): browsers take them to this machine
LOOPBACK_SHOWN = "localhost, *.localhost, 127.x.x.x, [::1]"
UPLOAD_DOC = {"requestBody": {"required": True, "description": "An audio file: the raw bytes, or a multipart form with one file.",
                              "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                                          "multipart/form-data": {"schema": {"type": "object", "properties": {
                                              "file": {"type": "string", "format": "binary"}}}}}}}


class ApiError(Exception):
    """An HTTP error in Spotify's shape."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)


async def server_error(_req: Request, exc: Exception) -> JSONResponse:
    """An unhandled exception's 500, in Spotify's shape (its traceback goes to the log, not to the client)."""
    return error_response(500, f"internal error ({type(exc).__name__})")


def json_text(text: str, status: int = 200) -> Response:
    """A response from JSON already serialised (results are stored as JSON text: no parse, no dump)."""
    return Response(text, status_code=status, media_type="application/json")


def _check_id(ident: str) -> None:
    """Refuse a malformed id with a 400 that shows it (quoted when empty or unprintable, cut at 40 characters)."""
    if not is_valid_id(ident):
        shown = ident if 0 < len(ident) <= 40 and ident.isprintable() else repr(ident[:40]) + ("..." if len(ident) > 40 else "")
        raise ApiError(400, f"invalid id {shown}: an id is 22 characters from 0-9, a-z, A-Z")


def _unknown(ident: str) -> ApiError:
    """The 404 of an id the index lacks, once the start-up scan has ended (`ready` answers 503 until then)."""
    return ApiError(404, f"no track with id {ident} in this library")


def cli_option(name: str, value: str = "") -> str:
    """How a message names one of `songfeat serve`'s options, with a value if given: `--allowed-host music.lan`."""
    return f"--{name} {value}".rstrip()


# ---- metrics ---------------------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics: requests and latencies per route, queue depth, analyses done and failed."""

    def __init__(self, library: Library):
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self.registry = CollectorRegistry()
        self.requests = Counter("songfeat_http_requests", "HTTP requests answered", ("method", "route", "status"),
                                registry=self.registry)
        self.latency = Histogram("songfeat_http_request_duration_seconds", "Time to answer an HTTP request", ("route",),
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

        class LibraryCollector:
            def collect(self):
                s, counts = library.stats, library.index.counts()
                g = GaugeMetricFamily("songfeat_analysis_queue_depth", "Files and audio analyses waiting for a worker")
                g.add_metric([], library.queue_depth(pending=counts["pending"]))
                yield g
                t = GaugeMetricFamily("songfeat_library_tracks", "Tracks in the index by state", labels=["state"])
                for state, n in counts.items():
                    t.add_metric([state], n)
                yield t
                c = CounterMetricFamily("songfeat_analyses", "Analyses finished by this server", labels=["outcome"])
                c.add_metric(["done"], s.done)
                c.add_metric(["failed"], s.failed)
                yield c
                k = CounterMetricFamily("songfeat_analyses_stopped", "Analyses whose worker was killed", labels=["reason"])
                k.add_metric(["time_limit"], s.timed_out)
                k.add_metric(["crashed"], s.crashed)
                yield k

        self.registry.register(LibraryCollector())

    def text(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every request under its route template (unmatched paths share one label)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"  # h11 lets any token through: bounded labels
            self.metrics.requests.labels(method, route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


class HeadAsGet:
    """HEAD answered as GET without the body (HTTP's rule; FastAPI's routes answer HEAD with 405), so monitors that
    probe with HEAD see /healthz as it is."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def no_body(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, no_body)


class NoTrailingSlash:
    """A path's one trailing slash dropped before routing: `/v1/audio-features/{id}/` is answered as without it, not
    with Starlette's 307 to a Location built from the client's Host header (the app is made with redirect_slashes off).
    A client written for Spotify expects this: Spotify answers `audio-features/?ids=`, spotipy's own spelling, so slashes
    its apps add are tolerated there, and a 404 here would break code that works against Spotify."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path, raw = scope["path"], scope.get("raw_path")
            if len(path) > 1 and path.endswith("/") and (raw is None or raw.endswith(b"/")):  # not an escaped %2F
                scope = {**scope, "path": path[:-1], **({} if raw is None else {"raw_path": raw[:-1]})}
        await self.app(scope, receive, send)


def _declared_length(headers: Headers) -> int | None:
    """The body's length as the request's headers declare it (`body_length`): the drain and the upload read it alike."""
    return body_length(headers.get("content-length"), "transfer-encoding" in headers)


def _drainable(headers: Headers, length: int | None) -> bool:
    """Whether a body left unread may be read and dropped to keep its connection: a known length of at most
    DRAIN_BYTES, and no `Expect: 100-continue` (reading would invite a body the client is waiting to be told not to
    send)."""
    return length is not None and length <= DRAIN_BYTES and "expect" not in headers


class CloseUnreadBody:
    """An answer sent before its request's body was read to its end (a refused upload) first reads and drops the rest
    of a small body (a Content-Length of at most DRAIN_BYTES) if it arrives within DRAIN_SECONDS, so a keep-alive client
    keeps its connection; any other gets `Connection: close`, and the connection ends with it: kept alive, uvicorn read
    and discarded the rest of the body however large, and a client that stopped sending it had its next request taken
    as that body. Until 2026-12-05 a small body sent whole cost its client a new connection too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        length = _declared_length(headers)
        read, drainable = length == 0, _drainable(headers, length)

        async def reading() -> Message:
            nonlocal read
            message = await receive()
            read = read or (message["type"] == "http.request" and not message.get("more_body", False))
            return message

        async def drain() -> bool:
            """Read and drop the rest of the body (DRAIN_BYTES at most); whether it was read to its end."""
            while not read:
                if (await reading())["type"] != "http.request":  # the client went away
                    return False
            return True

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not read:
                try:
                    kept = drainable and await asyncio.wait_for(drain(), DRAIN_SECONDS)
                except asyncio.TimeoutError:  # a slow or stopped body: not waited for, the connection ends instead
                    kept = False
                if not kept:
                    fields = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                    message = {**message, "headers": [*fields, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, reading, closing)


class Cors(CORSMiddleware):
    """Starlette's CORS middleware, with a refused preflight (origin, method or header not allowed) answered in Spotify's
    error shape, as every other error is, rather than Starlette's plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        return error_response(response.status_code, bytes(response.body).decode(), headers)


class AbsoluteForm:
    """An absolute-form request target (`GET http://host/path`), which h11 and songfeat's own protocol
    (`http_protocol`) hand to the app whole as its raw path: the app gets the target's path, and its authority as Host
    (RFC 9112, 3.2.2), so every check and route sees them (under h11 alone, until 2026-12-05: a 404 for
    `http://localhost/healthz`, and Host alone was checked). The rule's one place; a server that drops the authority
    before the app runs (uvicorn's own httptools protocol) leaves nothing here to apply it to."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = absolute_form(scope.get("raw_path") or b"") if scope["type"] == "http" else None
        if target is not None:  # the query is split off the target already, so the rest is the path alone
            path = target[1] or b"/"
            # Host fields (names in lower case), if any, replaced by one holding the target's authority: a server given
            # an absolute-form target must ignore Host and use the authority (RFC 9112, 3.2.2), or the Host check is
            # passed by `GET http://evil.example/ HTTP/1.1` with `Host: localhost`
            headers = [(b"host", target[0]), *((k, v) for k, v in scope["headers"] if k != b"host")]
            scope = {**scope, "raw_path": path, "path": unquote(path.decode("ascii", "replace")), "headers": headers}
        await self.app(scope, receive, send)


class HeadLimit:
    """`http_protocol.head_refusal`'s size rule (431, or 414 for a URL over 64 KiB) applied to the request head as the
    scope holds it, so it holds under any server: songfeat's own protocol refuses such a head before reading it, but the
    app run by uvicorn's own httptools answered a 1-MB header as any other request (its memory is spent by then; the
    answer is the same). What the scope holds is never more than the bytes that came (no separators, no spaces), so a
    head songfeat's protocol takes is taken here too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"")
            line = len(scope["method"]) + len(scope.get("raw_path") or scope["path"].encode()) + len(" HTTP/1.1\r\n") + 1 \
                + (len(query) + 1 if query else 0)
            refusal = head_refusal(line, line + sum(len(k) + len(v) + 3 for k, v in scope["headers"]) + 2)
            if refusal is not None:
                return await error_response(*refusal)(scope, receive, send)
        await self.app(scope, receive, send)


class Expectations:
    """417 Expectation Failed, in Spotify's shape and naming the header, for a request whose `Expect` header asks for
    anything but `100-continue`, the one expectation HTTP defines (RFC 9110, 10.1.1: a server may refuse the others so).
    Until 2026-12-06 such a header was ignored, and a client waiting for its expectation to be met was answered as if it
    had sent none. Members are compared without case; empty ones are ignored, as a list's are (RFC 9110, 5.6.1)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope["headers"]:
                if key == b"expect" and any(m.strip(b" \t").lower() not in (b"", b"100-continue") for m in value.split(b",")):
                    message = (f"Expect header {_shown_field(value.decode('latin-1'))} cannot be met: this server meets "
                               "only 'Expect: 100-continue'; send the request without it")
                    return await error_response(417, message)(scope, receive, send)
        await self.app(scope, receive, send)


class TrustedHosts:
    """A DNS-rebinding defence: requests are answered only when their Host header names a loopback host (localhost,
    `*.localhost`, 127.0.0.0/8, ::1 however spelled) or one of `allowed` (`check_allowed_host`'s: names, `*.` and a
    domain, IP addresses); any other Host, or none, a malformed or a repeated one, gets 400 in Spotify's shape saying how
    to allow it. A page whose own DNS name its owner points at 127.0.0.1 talks to a local server as its own origin (Host,
    Origin and Sec-Fetch-Site all its own), so nothing else stops it reading the library and posting as the user; its
    Host still names it. Names match as Starlette's TrustedHostMiddleware matches them (exactly, or `*.domain` for the
    names under it; its plain-text 400 and lack of address ranges are why it is not used as is); addresses are compared
    as addresses (127.0.0.0/8, an IPv6 address's spellings). Ports are not compared: the socket decides those."""

    def __init__(self, app, allowed: Iterable[str] = (), loopback: bool = True,
                 option: Callable[[str, str], str] = cli_option):
        self.app, self.loopback, self.option, allowed = app, loopback, option, list(allowed)
        self.addresses = {a for a in map(_address, allowed) if a is not None}
        names = [*LOOPBACK_NAMES, *(h for h in allowed if _address(h) is None)]
        self.names = {n for n in names if not n.startswith("*.")}
        self.domains = tuple(n[1:] for n in names if n.startswith("*."))  # ".lan": a name ending so is under it

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal([v.decode("latin-1") for k, v in scope["headers"] if k == b"host"])
        if refusal is None:
            return await self.app(scope, receive, send)
        await error_response(400, refusal)(scope, receive, send)

    def _named(self, name: str) -> bool:
        """Whether host name `name` is allowed: one of the names, or under one of the `*.` domains."""
        return name in self.names or name.endswith(self.domains)

    def refusal(self, hosts: list[str]) -> str | None:
        """Why a request with these Host headers is refused (a 400's message), or None to answer it."""
        if not hosts:  # no browser sends a request without one (HTTP/1.1 requires it)
            return ("no Host header: send the name this server is reached by, e.g. Host: localhost "
                    "(every HTTP/1.1 client does)")
        if len(hosts) > 1:  # a proxy may have routed on either: neither is taken at its word
            return "more than one Host header"
        parsed = _host_port(hosts[0], "http")
        name = parsed[0].removesuffix(".") if parsed else ""  # `localhost.` is localhost
        address = _address(name)
        if address is None and not (HOST_NAME.fullmatch(name) and "*" not in name):
            return f"malformed Host header {_shown_field(hosts[0])}: give host[:port]"
        if address is not None:
            admitted = address.is_loopback or address in self.addresses
        else:
            admitted = self._named(name)
        if admitted:
            return None
        served = "listens on a loopback address and answers" if self.loopback else "answers"
        return (f"Host {_shown_field(hosts[0])} refused: this server {served} only requests addressed to {LOOPBACK_SHOWN} "
                f"or a name given with {self.option('allowed-host')}. A web page whose own name was pointed at this machine (DNS "
                "rebinding) sends its name; to reach the server under that name yourself (a reverse proxy, a LAN name), "
                f"start it with {self.option('allowed-host', name if len(name) <= 100 else 'NAME')}")


# ---- uploads ----------------------------------------------------------------------------------------


async def _body(request: Request):
    """The request body's chunks, each waited for at most BODY_IDLE_SECONDS, and all of them by BODY_IDLE_SECONDS plus
    a second per BODY_MIN_RATE bytes received (Apache's mod_reqtimeout rule): a client that stops sending mid-upload, or
    sends a byte now and then, would otherwise hold an upload slot (and its connection) for ever."""
    chunks = request.stream().__aiter__()
    start, received = time.monotonic(), 0
    while True:
        left = start + BODY_IDLE_SECONDS + received / BODY_MIN_RATE - time.monotonic()
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(0.0, min(left, BODY_IDLE_SECONDS)))
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:  # closes the connection: CloseUnreadBody
            if left >= BODY_IDLE_SECONDS:
                raise ApiError(408, f"upload stalled: no data for {BODY_IDLE_SECONDS:g} s") from None
            raise ApiError(408, f"upload too slow: {received} bytes in {time.monotonic() - start:.0f} s (an upload may "
                                f"take {BODY_IDLE_SECONDS:g} s plus 1 s per {BODY_MIN_RATE} bytes sent)") from None
        except ClientDisconnect:  # the client went away mid-upload: no one to answer, nothing to log as a server error
            raise ApiError(400, "the client disconnected before the upload was complete") from None
        received += len(chunk)
        yield chunk


async def receive_upload(request: Request, limit: int, directory: Path) -> tuple[str, str, str]:
    """Stream the request body (raw or multipart) to a temporary file, enforcing `limit` bytes while reading.

    Returns (temporary path, file suffix, name to show in messages). Raises ApiError 413 / 400, or 408 for a stalled body.
    """
    ctype = request.headers.get("content-type", "")
    declared = _declared_length(request.headers)
    multipart = ctype.lower().startswith("multipart/form-data")
    too_big = ApiError(413, f"upload larger than the {limit / 1e6:g} MB limit")
    if declared is not None and declared > limit + (MULTIPART_SLACK if multipart else 0):
        raise too_big
    fd, tmp = stage_upload(directory)
    name = request.query_params.get("filename", "")
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            if multipart:
                name, written = await _receive_multipart(request, ctype, out, limit, too_big)
            else:
                async for chunk in _body(request):
                    written += len(chunk)
                    if written > limit:
                        raise too_big
                    out.write(chunk)
        if written == 0:
            raise ApiError(400, "empty upload: send the audio file as the request body or as a multipart file")
    except BaseException:
        os.unlink(tmp)
        raise
    suffix = Path(name).suffix.lower()
    if suffix not in AUDIO_EXTENSIONS:
        suffix = CONTENT_TYPES.get(ctype.split(";")[0].strip().lower(), "")
    return tmp, suffix, _shown(Path(name).name or "upload")  # `filename=/` named nothing: ': not a readable audio file'


class _MultipartLog(logging.LoggerAdapter):
    """python-multipart's parser log, put on songfeat's at DEBUG: it warns of each malformed body before raising for it,
    and with no handler of its own Python printed the line raw on the server's stderr ('Found invalid character 255 in
    header at 8'), outside songfeat's lines; the client's 400 already says it."""

    def log(self, level: int, msg: object, *args, **kwargs) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)

    def process(self, msg: object, kwargs: dict) -> tuple[str, dict]:
        return f"songfeat: malformed multipart body: {msg}", kwargs


MULTIPART_LOG = _MultipartLog(logging.getLogger(__name__), {})


async def _receive_multipart(request: Request, ctype: str, out, limit: int, too_big: ApiError) -> tuple[str, int]:
    """Write the first file part of a multipart body to `out`; return (its filename, bytes written)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "multipart body without a boundary")
    state = {"field": b"", "value": b"", "headers": {}, "target": False, "taken": False, "name": None, "written": 0}

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        is_file = b"filename" in disp or disp.get(b"name") in (b"file", b"audio")
        state["target"] = is_file and not state["taken"]
        if state["target"]:
            state["taken"] = True
            state["name"] = disp.get(b"filename", b"upload").decode("utf-8", "replace")

    def on_part_data(data, start, end):
        if state["target"]:
            state["written"] += end - start
            if state["written"] > limit:
                raise too_big
            out.write(data[start:end])

    def on_part_begin():
        state["headers"] = {}

    total = 0
    try:  # the parser's constructor raises too (a boundary over 256 bytes): a 400, not a 500
        parser = MultipartParser(boundary, {"on_header_field": on_header_field, "on_header_value": on_header_value,
                                            "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
                                            "on_part_data": on_part_data, "on_part_begin": on_part_begin})
        parser.logger = MULTIPART_LOG
        async for chunk in _body(request):
            total += len(chunk)
            if total > limit + MULTIPART_SLACK:
                raise too_big
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        raise
    except Exception as e:  # python-multipart's parse errors
        raise ApiError(400, f"malformed multipart body ({e})") from None
    if not state["taken"]:
        raise ApiError(400, "multipart body has no file part (send the audio as a field named 'file')")
    return state["name"], state["written"]


# ---- the app ------------------------------------------------------------------------------------------


def check_token(token: str | None) -> None:
    """ValueError unless the token is printable ASCII: a header carries bytes read as latin-1, so a token with other
    characters could never be matched, and every request would get 401. An empty one is refused too: it read as no
    token, so `--token ''` (or an empty SONGFEAT_TOKEN) served without authentication and said nothing."""
    if token == "":
        raise ValueError("it is empty: give a token, or leave both --token and SONGFEAT_TOKEN unset to serve without one")
    if token is not None and not (token.isascii() and token.isprintable() and token.strip() == token and token):
        raise ValueError("the token must be printable ASCII without surrounding spaces (an HTTP header carries no other "
                         "characters, so no request could ever match it)")


def check_cors_origin(origin: str) -> str:
    """`origin` if a browser could send it as its Origin header (or it is `*`), else ValueError saying how browsers spell
    it: CORS compares origins as exact strings, so `http://localhost:3000/` or `HTTP://Host` would never match, silently."""
    if origin == "*":
        return origin
    if origin == "null":  # sandboxed frames and file:// pages of any site send it
        raise ValueError("'null' is the origin of sandboxed and file:// pages of every site: give '*' if any page may call")
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        parts = port = None
    host = parts.hostname if parts else None
    if (not (origin.isascii() and origin.isprintable()) or " " in origin or parts is None or not parts.scheme or not host
            or parts.username is not None or parts.password is not None or not ORIGIN_HOST.fullmatch(host)):
        raise ValueError(f"{origin!r} is not an origin: give scheme://host[:port], e.g. http://localhost:3000, or '*'")
    scheme = parts.scheme.lower()
    spelled = (f"{scheme}://" + (f"[{host}]" if ":" in host else host)
               + ("" if port in (None, DEFAULT_PORTS.get(scheme)) else f":{port}"))
    if spelled != origin:
        raise ValueError(f"{origin!r} would never match: browsers send it as {spelled!r} (no path, lower case, no default port)")
    return origin


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_allowed_host(name: str) -> str:
    """`name` as the Host check compares it (lower case; an IP address in its canonical spelling, without brackets) if
    a Host header can name it: a host name (`music.lan`), `*.` and a domain (`*.lan`: every name under it, not `lan`
    itself), an IP address, or `*` (any: no check); else ValueError saying how to write it. A port, a scheme or a path
    is refused, not dropped: the check compares host names only, and the option should say what it does."""
    if name == "*":
        return name
    host = name.lower()
    address = _address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    if address is not None:
        return address.compressed
    if HOST_NAME.fullmatch(host.removesuffix(".")):
        return host.removesuffix(".")  # `music.lan.` is the same name
    try:
        bare = urlsplit(host if "//" in host else f"//{host}").hostname
    except ValueError:
        bare = None
    if bare and bare != host and (HOST_NAME.fullmatch(bare) or _address(bare) is not None):
        raise ValueError(f"{name!r}: give the host name alone, {bare!r} (the check compares host names, whatever the "
                         "scheme or port)")
    if host.startswith(".") and HOST_NAME.fullmatch(host[1:]):
        raise ValueError(f"{name!r}: for every name under {host[1:]} give '*{host}' (and {host[1:]!r} for that name itself)")
    raise ValueError(f"{name!r} is not a host name: give a name (music.lan), '*.' and a domain for every name under it "
                     "(*.lan), an IP address, or '*' for any host")


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None] | None:
    """(host, port) of a `host[:port]` as an origin compares them: the host lower case, an IP address in its canonical
    spelling (IPv6 without its brackets), a port left out the scheme's default; None if `netloc` is no such thing."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:  # a port out of range or not a number, an unclosed IPv6 bracket
        return None
    host = parts.hostname
    if not host or "@" in parts.netloc or parts.path or parts.query or parts.fragment:  # user@, a path: no host
        return None
    address = _address(host)
    return address.compressed if address is not None else host, DEFAULT_PORTS.get(scheme) if port is None else port


def is_same_origin(origin: str, scheme: str, host: str | None) -> bool:
    """Whether a browser's `Origin` header names the origin of the request it came with: `scheme` (as the server sees
    it, X-Forwarded-Proto from a trusted proxy included) and its `Host` header, compared as origins are (scheme, host
    and port; case, a default port and an IPv6 address's spelling aside). `null` (sandboxed and file:// pages, or after
    a redirect from another origin) is nobody's."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    theirs = parts.scheme.lower()
    if host is None or theirs != scheme.lower() or parts.path or parts.query or parts.fragment:
        return False
    mine = _host_port(host, theirs)
    return mine is not None and _host_port(parts.netloc, theirs) == mine


def _shown(text: str, limit: int = 100) -> str:
    """A name (an upload's) as a message shows it: as is when short and printable, else quoted and cut."""
    if 0 < len(text) <= limit and text.isprintable():
        return text
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def _shown_field(value: str, limit: int = 100) -> str:
    """A header field's value as a message shows it: as is when short printable ASCII, else its bytes quoted, every
    other byte escaped (`'m\\xc3\\xbcsic.lan'`), and cut. A field carries bytes, which Starlette reads as latin-1: shown
    as that text, a UTF-8 name came out garbled (`mÃ¼sic.lan`, until 2026-12-06)."""
    raw = value.encode("latin-1", "replace")
    if 0 < len(raw) <= limit and value.isascii() and value.isprintable():
        return value
    return repr(raw[:limit])[1:] + ("..." if len(raw) > limit else "")


def cross_origin_refusal(method: str, path: str, headers: Headers, scheme: str) -> str | None:
    """Why a request is refused as another origin's (a 403's message), or None to take it.

    A page may make its visitor's browser POST a form (multipart/form-data, text/plain) to any address, this server's
    on localhost included, without a CORS preflight: the page cannot read the answer, but without a token the server
    would act on it. So, as Go's `http.CrossOriginProtection` and Django's CSRF origin check do, a request of a method
    other than GET/HEAD/OPTIONS is refused when the browser says another origin sent it: by `Sec-Fetch-Site` (sent by
    every current browser to https and loopback addresses; only `same-origin` and `none` pass) or, without it, by an
    `Origin` that is not the request's own (`is_same_origin`). A request with neither header is no browser's
    cross-origin one (curl, spotipy, scripts) and passes, as does every GET; an origin named by `--cors-origin` gets
    no exception: CORS opens the GET routes only."""
    if method in SAFE_METHODS:
        return None
    origins, sites, hosts = headers.getlist("origin"), headers.getlist("sec-fetch-site"), headers.getlist("host")
    host = hosts[0] if len(hosts) == 1 else None
    foreign = [o for o in origins if not is_same_origin(o, scheme, host)]
    other = [s for s in sites if s.strip().lower() not in SAME_ORIGIN_FETCH]
    # Sec-Fetch-Site, the browser's own word (a proxy rewriting Host does not change it), decides; without it, Origin
    # does: none at all (no browser's cross-origin request) or the request's own passes
    if not (other if sites else foreign):
        return None
    sender = (foreign or origins or [None])[0]
    who = (f"a page of another origin (Sec-Fetch-Site: {_shown_field(other[0], 20)})" if sender is None
           else "a sandboxed or file:// page (Origin: null)" if sender == "null" else f"a page at {_shown_field(sender)}")
    return (f"cross-origin request refused: {who} may not {method} {path}. Requests that change the library are taken "
            "only from clients that send no Origin header (curl, scripts, spotipy) and from this server's own pages; "
            "--cors-origin opens the GET routes only")


def create_app(library: Library, token: str | None = None, max_upload_mb: float = UPLOAD_MB, wait_seconds: float = WAIT_SECONDS,
               rehash: bool = False, rescan_interval: float = 0.0, start: bool = True,
               cors_origins: str | Iterable[str] = (), allowed_hosts: str | Iterable[str] = (),
               bind: str | None = "127.0.0.1", option: Callable[[str, str], str] = cli_option) -> FastAPI:
    """The FastAPI app over `library`; with `start`, its lifespan starts and stops the library's workers; with
    `cors_origins`, browser pages from those origins (`*`: any) may call its GET routes. `bind` is the address it is
    served on (`run` passes its socket's): on a loopback one, requests are answered only when their Host header names a
    loopback host or one of `allowed_hosts` (`TrustedHosts`, a DNS-rebinding defence); on any other, the operator chose
    to expose it, and Host is checked only when `allowed_hosts` are given; `*` among them turns the check off. None: not
    known (another server runs the app, `app_from_env`), and Host is checked as on a loopback one. `option` names the
    settings in messages (`--allowed-host NAME`; `env_option` for `app_from_env`'s variables)."""
    check_token(token)
    cors_origins = [check_cors_origin(o) for o in ([cors_origins] if isinstance(cors_origins, str) else cors_origins)]
    allowed_hosts = [check_allowed_host(h) for h in ([allowed_hosts] if isinstance(allowed_hosts, str) else allowed_hosts)]
    limit = int(max_upload_mb * 1_000_000)
    upload_slots = library.workers * UPLOADS_PER_WORKER
    busy = {"uploads": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start:
            library.start(rehash=rehash, rescan_interval=rescan_interval)
        try:
            yield
        finally:
            if start:
                await asyncio.to_thread(library.stop)

    app = FastAPI(title="songfeat", version="1", lifespan=lifespan, redirect_slashes=False,
                  description="Spotify's audio-features API over your own music library, analysed offline by songfeat.")
    metrics = Metrics(library)
    app.add_middleware(Expectations)  # innermost, inside the Host check: a refusal counted, HEAD as GET, CORS headers
    if "*" not in allowed_hosts and (bind is None or is_loopback(bind) or allowed_hosts):
        # inside all but Expectations: a refused Host is counted in the metrics, answered HEAD as GET, and carries the
        # CORS headers, so an allowed page that calls this server under a name not allowed reads why. Preflights are
        # answered before it: they read nothing, and a rebinding page, being same-origin, sends none
        app.add_middleware(TrustedHosts, allowed=allowed_hosts, loopback=bind is not None and is_loopback(bind),
                           option=option)
    if cors_origins:  # inside the metrics: preflights are answered before the routes' token check, and are counted
        # Starlette's 500 is made by its ServerErrorMiddleware, outside every middleware added: one inside Cors makes it
        # there instead, so a page may read it (it re-raises: the outer one sees the response begun, uvicorn logs it)
        app.add_middleware(ServerErrorMiddleware, handler=server_error)
        app.add_middleware(Cors, allow_origins=cors_origins, allow_methods=CORS_METHODS, allow_headers=["Authorization"],
                           expose_headers=["Retry-After"],  # a page must read it to honour a 503, as spotipy does
                           allow_private_network=True)  # the operator named the origins: a public page may reach a local server
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(HeadAsGet)
    app.add_middleware(NoTrailingSlash)
    app.add_middleware(HeadLimit)  # the protocol's head-size rule, for servers that do not apply it
    app.add_middleware(CloseUnreadBody)  # every answer given before its body was read, refusals included
    app.add_middleware(AbsoluteForm)  # outermost: every check and route sees the host and path the target names

    @app.exception_handler(ApiError)
    async def api_error(_req, exc: ApiError):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req, exc: StarletteHTTPException):
        message = {404: "Service not found", 405: "Method not allowed"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_req, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error_response(400, f"invalid {where}: {first.get('msg', 'bad request')}")

    app.add_exception_handler(Exception, server_error)  # a 500 from outside Cors (the outer middlewares; CORS off)

    def require_token(request: Request) -> None:
        if token is None:
            return
        auths = request.headers.getlist("authorization")
        if len(auths) > 1:  # never the first one's word (a proxy may have added or kept one); RFC 6750 3.1: 400 invalid_request
            raise ApiError(400, "invalid request: more than one Authorization header",
                           {"WWW-Authenticate": 'Bearer error="invalid_request"'})
        auth = auths[0] if auths else ""
        if not auth:
            raise ApiError(401, "No token provided", {"WWW-Authenticate": "Bearer"})
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "Invalid access token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def same_origin_only(request: Request) -> None:  # before the token: the 403 says why, whatever the token
        refusal = cross_origin_refusal(request.method, request.url.path, request.headers, request.url.scheme)
        if refusal is not None:
            raise ApiError(403, refusal)

    api = APIRouter(dependencies=[Depends(same_origin_only), Depends(require_token)])

    async def ready(ids: list[str], wait: bool, analysed: bool = True) -> dict:
        """Entries for `ids`; pending ones (when they must be `analysed`) are moved up the queue and waited for (wait)
        or answered 503, and so are ids the index lacks while the start-up scan runs: their files may not have been
        reached yet. The one place of that rule: once the scan has ended, such ids are unknown (404, null in a batch)."""
        deadline = time.monotonic() + wait_seconds
        entries = library.index.lookup(ids)
        while wait and library.indexing and not entries.keys() >= set(ids) and time.monotonic() < deadline:
            await asyncio.sleep(INDEXING_POLL)
            entries = library.index.lookup(ids)
        pending = [e.path for e in entries.values() if e.state == "pending"] if analysed else []
        if pending:
            fut = library.prioritise(pending)
            if wait:
                await asyncio.wait([asyncio.wrap_future(fut)], timeout=max(0.0, deadline - time.monotonic()))
                entries = library.index.lookup(ids)
                pending = [e.path for e in entries.values() if e.state == "pending"]
        unseen = len(set(ids) - entries.keys()) if library.indexing else 0
        if pending or unseen:
            after = max(library.retry_after(len(pending)) if pending else 0, INDEXING_RETRY if unseen else 0)
            why = [f"{n} of these tracks {'is' if n == 1 else 'are'} {what}" for n, what in
                   ((len(pending), "not analysed yet"), (unseen, f"not indexed yet ({INDEXING})")) if n]
            raise ApiError(503, f"{'; '.join(why)}; retry after {after} s (or add wait=true)", {"Retry-After": str(after)})
        return entries

    @api.get("/v1/audio-features", summary="Audio features of up to 100 tracks")
    async def several(request: Request, ids: Optional[str] = Query(None, description="Comma-separated track ids (at most 100)"),
                      wait: bool = Query(False, description="Hold the request until pending tracks are analysed")):
        """Spotify's batch lookup: `{"audio_features": [...]}` in request order, null for unknown ids."""
        ids = ",".join(request.query_params.getlist("ids"))  # `ids=a&ids=b` is every id, in order, not only the last
        wanted = [i.strip() for i in ids.split(",")] if ids else []
        if not wanted:
            raise ApiError(400, "invalid request: the ids parameter is required")
        if len(wanted) > MAX_IDS:
            raise ApiError(400, f"Too many ids requested ({len(wanted)}; at most {MAX_IDS})")
        for i in wanted:
            _check_id(i)
        entries = await ready(wanted, wait)
        parts = [entries[i].features if i in entries and entries[i].state == "done" else "null" for i in wanted]
        return json_text('{"audio_features": [' + ", ".join(parts) + "]}")

    @api.get("/v1/audio-features/{id}", summary="Audio features of one track")
    async def one(id: str, wait: bool = Query(False, description="Hold the request until the track is analysed")):
        """Spotify's single lookup: one audio-features object, 404 for an unknown id."""
        _check_id(id)
        entry = (await ready([id], wait)).get(id)
        if entry is None:
            raise _unknown(id)
        if entry.state == "failed":
            raise ApiError(404, f"track {id} could not be analysed: {entry.error}{failure_note(entry.error, entry.analyses)}")
        return json_text(entry.features)

    @api.post("/v1/audio-features", summary="Analyse an uploaded audio file", openapi_extra=UPLOAD_DOC)
    async def upload(request: Request):
        """Analyse the posted file (raw body or multipart), store it under its content-hash id, return its features."""
        if busy["uploads"] >= upload_slots:
            raise ApiError(429, "too many uploads in progress; retry shortly", {"Retry-After": "2"})
        busy["uploads"] += 1
        try:
            tmp, suffix, name = await receive_upload(request, limit, library.uploads)
            ident, fut = await asyncio.to_thread(library.upload, tmp, suffix)
            if fut is not None:
                done, _ = await asyncio.wait([asyncio.wrap_future(fut)], timeout=library.time_limit + 30)
                if not done:
                    raise ApiError(503, f"{name} is still being analysed; ask GET /v1/audio-features/{ident} later",
                                   {"Retry-After": str(library.retry_after())})
                exc = next(iter(done)).exception()
                if isinstance(exc, TransientFailure):  # the server's trouble, not the file's: posting it again retries
                    raise ApiError(503, f"{name}: {exc}; post it again later", {"Retry-After": str(library.retry_after())})
                if isinstance(exc, AnalysisFailed):
                    await asyncio.to_thread(library.forget_upload, ident)
                    raise ApiError(400, f"{name}: {exc}")
            entry = library.index.lookup([ident]).get(ident)
            if entry is None or entry.state != "done":
                raise ApiError(500, f"{name}: analysed, but its result is missing from the index")
            return json_text(entry.features)
        finally:
            busy["uploads"] -= 1

    @api.get("/v1/audio-analysis/{id}", summary="Audio analysis of one track (Spotify's AudioAnalysisObject)")
    async def audio_analysis(id: str, wait: bool = Query(False, description="Hold the request while the library's first "
                                                             "scan may still reach the track")):
        """Beats, bars, sections and segments, computed on first request and cached; 501 if songfeat cannot yet."""
        _check_id(id)
        if library.indexing:  # its features need not be in; its file must have been indexed
            await ready([id], wait, analysed=False)
        try:
            cached, fut = library.audio_analysis(id)
        except NotImplementedError as e:
            raise ApiError(501, str(e)) from None
        except KeyError:
            raise _unknown(id) from None
        if cached is None:
            done, _ = await asyncio.wait([asyncio.wrap_future(fut)], timeout=wait_seconds)
            if not done:
                raise ApiError(503, "the audio analysis is being computed; retry shortly", {"Retry-After": "5"})
            exc = next(iter(done)).exception()
            if exc is not None:
                raise ApiError(404, f"track {id} could not be analysed: {exc}{failure_note(str(exc))}")
            cached, _ = library.audio_analysis(id)
        return json_text(cached)

    @api.post("/library/rescan", summary="Scan the library folder now", status_code=202)
    async def rescan():
        """Pick up new, changed and removed files without a restart (the scan runs in the background)."""
        library.request_scan()
        return {"status": "scanning"}

    @api.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        body, ctype = metrics.text()
        return Response(body, media_type=ctype)

    @app.get("/healthz", summary="Liveness and index counts (no token needed)")
    async def healthz():
        counts = library.index.counts()
        queue = library.queue_depth(pending=counts["pending"])
        return {"status": "ok", "tracks": sum(counts.values()), **counts, "queue": queue,
                "model": library.index.model, "workers": library.workers,
                "last_scan": None if library.last_scan is None else dataclasses.asdict(library.last_scan)}

    app.include_router(api)
    return app


def is_loopback(host: str) -> bool:
    address = _address(host)
    return address.is_loopback if address is not None else host == "localhost"


def listen(host: str, port: int):
    """A socket bound to (host, port), or SongfeatError saying why not (a port in use, an unknown host): taken before the
    library starts, a busy port was uvicorn's own error line and exit 3, after the workers had started and scanned."""
    import socket

    from .errors import SongfeatError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise SongfeatError(None, f"--host {host}: not an address this machine can listen on ({getattr(e, 'strerror', None) or e})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart need not wait for TIME_WAIT
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise SongfeatError(None, f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def console_log(quiet: bool = False) -> None:
    """Print songfeat's log lines (the library's scan summaries, the queue's progress, failed files) on stderr as they
    are written ('songfeat: ...'); `quiet`: warnings and errors only. Without a handler, Python's last-resort one printed
    the warnings alone; an application that set up logging itself keeps its own handlers (only the level is set)."""
    log = logging.getLogger("songfeat")
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)  # the format is the message's own, as the last-resort handler's
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)


def run(library: Library, host: str = "127.0.0.1", port: int = 8080, token: str | None = None, max_upload_mb: float = UPLOAD_MB,
        rehash: bool = False, rescan_interval: float = 0.0, log_level: str = "info", sock=None,
        cors_origins: Iterable[str] = (), allowed_hosts: Iterable[str] = (), quiet: bool = False) -> None:
    """Serve `library` with uvicorn until interrupted (the library's workers stop with it), on `sock` (from `listen`;
    by default bound here to (host, port)); `cors_origins` and `allowed_hosts` as for `create_app`, the Host check
    decided by the address the socket is bound to (a name `--host` gave, such as this machine's, may be a loopback one).
    `log_level` is uvicorn's; songfeat's own lines go to stderr (`console_log`), warnings only when `quiet`."""
    import uvicorn

    console_log(quiet)
    sock = sock or listen(host, port)
    address = sock.getsockname()
    app = create_app(library, token=token, max_upload_mb=max_upload_mb, rehash=rehash, rescan_interval=rescan_interval,
                     cors_origins=cors_origins, allowed_hosts=allowed_hosts,
                     bind=address[0] if isinstance(address, tuple) else host)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, server_header=False, **uvicorn_options()))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # as uvicorn.run: Ctrl-C is the way to stop a server
        pass


def unsafe_settings(token: str | None, cors_origins: Iterable[str], allowed_hosts: Iterable[str], loopback: bool,
                    option: Callable[[str, str], str] = cli_option) -> list[str]:
    """Warning lines for settings that open the library to web pages (CORS or the Host check off without a token), each
    setting named by `option` (`--cors-origin '*'` for `songfeat serve`, `SONGFEAT_CORS_ORIGIN='*'` for `app_from_env`)."""
    lines = []
    if not token and "*" in cors_origins:
        lines.append(f"{option('cors-origin', repr('*'))} without {option('token')}: any web page its users open can read "
                     "the library")
    if not token and "*" in allowed_hosts and loopback:
        lines.append(f"{option('allowed-host', repr('*'))} without {option('token')}: a web page whose name is pointed at "
                     "this machine (DNS rebinding) can read the library and upload")
    return lines


ENV_OPTIONS = ("library", "db", "workers", "token", "rescan", "rescan-interval", "max-upload-mb", "time-limit",
               "cors-origin", "allowed-host", "quiet")  # `songfeat serve`'s own options: --host and --port are the server's
TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def env_name(option: str) -> str:
    """The variable `app_from_env` reads for a `songfeat serve` option: `--rescan-interval` is SONGFEAT_RESCAN_INTERVAL."""
    return "SONGFEAT_" + option.upper().replace("-", "_")


def env_option(name: str, value: str = "") -> str:
    """`cli_option` for `app_from_env`: a message names its variables (`SONGFEAT_ALLOWED_HOST=music.lan`)."""
    return f"{env_name(name)}={value}" if value else env_name(name)


def settings_from_env(environ: Mapping[str, str]) -> dict:
    """`songfeat serve`'s settings from `environ`'s SONGFEAT_* variables (`env_name`), with its defaults and checks
    (`serve_options`, the table the command declares its options with), as keyword arguments: `library`, `db`, `workers`, `time_limit`, `quiet` and `create_app`'s.
    SongfeatError naming the variable and what to give for a missing SONGFEAT_LIBRARY or a value `songfeat serve`
    would refuse."""
    from .errors import SongfeatError, no_folder
    from .runtime import usable_cpus

    get = {option: environ.get(env_name(option)) for option in ENV_OPTIONS}
    if not (get["library"] or "").strip():
        raise SongfeatError(None, f"{env_name('library')} is not set: give the music folder to serve, e.g. "
                                  f"{env_name('library')}=~/Music uvicorn songfeat.serve:app_from_env --factory")
    library = Path(get["library"]).expanduser()
    if not library.is_dir():
        raise SongfeatError(None, f"{env_name('library')}={library}: {no_folder(library)}")

    def number(option: str, kind: type = float) -> float | None:
        default, least = serve_options.DEFAULTS[option]
        text = (get[option] or "").strip()
        if not text:
            return default
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= least:  # (nan is no number here)
            raise SongfeatError(None, f"{env_name(option)}={text!r}: give a {'whole ' if kind is int else ''}number of at "
                                      f"least {least:g}")
        return value

    def flag(option: str) -> bool:
        text = (get[option] or "").strip().lower()
        if text not in TRUE + FALSE:
            raise SongfeatError(None, f"{env_name(option)}={get[option]!r}: give 1 or 0 (true or false)")
        return text in TRUE if text else bool(serve_options.default(option))

    def checked(option: str, check: Callable[[str], str]) -> list[str]:
        try:
            return [check(v) for v in re.split(r"[\s,]+", get[option] or "") if v]
        except ValueError as e:
            raise SongfeatError(None, f"{env_name(option)}: {e}") from None

    try:
        check_token(get["token"])
    except ValueError as e:
        raise SongfeatError(None, f"{env_name('token')}: {e}") from None
    return {"library": library, "db": Path(get["db"]).expanduser() if (get["db"] or "").strip() else None,
            "workers": number("workers", int) or usable_cpus(),
            "time_limit": number("time-limit"), "quiet": flag("quiet"), "token": get["token"],
            "rehash": flag("rescan"), "rescan_interval": number("rescan-interval"),
            "max_upload_mb": number("max-upload-mb"),
            "cors_origins": checked("cors-origin", check_cors_origin),
            "allowed_hosts": checked("allowed-host", check_allowed_host)}


def app_from_env() -> FastAPI:
    """The app `songfeat serve` runs, for another ASGI server: `uvicorn songfeat.serve:app_from_env --factory`, settings
    from SONGFEAT_* variables (`settings_from_env`). The index's serving lock is taken here, so a second process on the
    library (`uvicorn --workers 2`) stops at once. A missing or bad setting, or a library that cannot be served, is one
    line on stderr and exit 3 (uvicorn's status, and gunicorn's, for an app that cannot start), not a traceback."""
    from .errors import SongfeatError
    from .runtime import capped_workers

    library = None
    try:
        settings = settings_from_env(os.environ)
        quiet, asked = settings.pop("quiet"), settings.pop("workers")
        workers, too_many = capped_workers(asked, env_option("workers", str(asked)))
        library = Library(settings.pop("library"), db=settings.pop("db"), workers=workers,
                          time_limit=settings.pop("time_limit"))
        library.claim(db_option=env_name("db"))
    except SongfeatError as e:
        if library is not None:
            library.stop()  # nothing started yet: this closes what it opened (as `songfeat serve` does)
        print(f"songfeat: error: {e}", file=sys.stderr)
        raise SystemExit(3) from None
    if too_many:  # as --workers: one per usable CPU at most
        print(f"songfeat: warning: {too_many}", file=sys.stderr)
    for line in unsafe_settings(settings["token"], settings["cors_origins"], settings["allowed_hosts"], True, env_option):
        print(f"songfeat: warning: {line}", file=sys.stderr)
    console_log(quiet)
    logging.getLogger(__name__).info("songfeat: serving %s (index %s, %d worker%s)", library.root, library.index.path,
                                     library.workers, "s" if library.workers != 1 else "")
    return create_app(library, **settings, bind=None, option=env_option)
