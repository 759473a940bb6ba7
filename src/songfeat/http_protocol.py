"""uvicorn's HTTP/1.1 protocol with a cap on the size of a request's head (request line and headers) and on the time
it may take to arrive.

httptools, the parser uvicorn prefers, buffers a header whole however large it grows: one client sending a 200-MB
header made the server hold all of it. And uvicorn waits for a head without limit: connections that send nothing, or
a header a byte a minute ("slowloris"), stay open until the server runs out of file descriptors. `protocol()` returns
the httptools protocol with both bounded: past `MAX_HEAD_BYTES` the client gets 431 (414 when the request line alone,
its target, is that long), and a head (or a new connection's first byte) not complete within `HEAD_SECONDS` gets 408,
each in Spotify's error shape, and the connection is closed.
The same cap holds for what a chunked body sends besides its data (its trailer fields, which httptools also buffers
whole), and requests the parser rejects get their 400 in Spotify's shape too, not uvicorn's plain text, and one log line
naming the problem in place of uvicorn's "Invalid HTTP request received.".
Where httptools is not installed it returns uvicorn's h11 protocol, whose own size limit `uvicorn_options` sets to the
same size.
A request whose target is in absolute form (`GET http://host/path`) reaches the app with that target whole in its
`raw_path`, as under h11, so the app's one rule (`serve.AbsoluteForm`: the target's authority is the request's Host, RFC
9112, 3.2.2) sees it: uvicorn's own httptools protocol keeps the path alone. Rules an app can check from the request's
scope are the app's (`head_refusal`'s size rule is applied there too, for servers that do not bound a head); what it
cannot see (a head's time, its raw bytes, trailer fields) is this module's alone.
So is a client that asks for an answer and never reads it: uvicorn hands the whole answer to the connection's write
buffer at once (the app's `send` returns at once), and closing the connection waits for that buffer to be sent, so such
a client held its connection and the answer's memory for good. `StalledReader` cuts a connection whose unsent answer
has not moved for `SEND_SECONDS` (nginx's send_timeout); a client reading slowly is never cut.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
import sys
import threading
from http import HTTPStatus
from typing import Any

try:
    from fcntl import ioctl
    from termios import TIOCOUTQ  # Linux's SIOCOUTQ: a TCP socket's bytes its peer has not acknowledged
except ImportError:  # Windows: the transport's buffer alone measures a stalled reader
    ioctl = TIOCOUTQ = None  # type: ignore[assignment]

MAX_HEAD_BYTES = 64 << 10  # nginx's default allows 4 buffers of 8 KB per header; a cookie-laden browser sends ~4 KB
HEAD_SECONDS = 60.0  # nginx's client_header_timeout: a request's head, or a new connection's first one, must arrive in it
def peer(client: tuple[str, int] | None) -> str:
    """A client's address as a log line names it: host:port, an IPv6 host in brackets ([::1]:40312), or "a client"."""
    if not client:
        return "a client"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


SEND_SECONDS = 60.0  # nginx's send_timeout: an answer none of whose waiting bytes leave in this long closes its connection
SHUTDOWN_SECONDS = 10.0  # on SIGTERM / Ctrl-C, requests still running (a trickling upload) are cancelled after this
ABSOLUTE_FORM = re.compile(rb"[a-z][a-z0-9+.-]*://([^/?#]*)(.*)", re.I | re.S)  # scheme://authority, then path?query


def absolute_form(target: bytes) -> tuple[bytes, bytes] | None:
    """(authority, path and query) of an absolute-form request target (`http://host:port/path?q`), or None for any other
    form (`/path?q`, `*`, `host:port`)."""
    match = ABSOLUTE_FORM.fullmatch(target)
    return (match[1], match[2]) if match else None


def head_refusal(line_bytes: int, head_bytes: int) -> tuple[int, str] | None:
    """(status, message) refusing a request head of this size, or None: 414 when its request line alone is over
    MAX_HEAD_BYTES (its target is what is too long), 431 when the whole head is. The one rule for the protocol, which
    counts raw bytes as they arrive, and for the app (`serve.HeadLimit`), which counts what its scope holds."""
    if line_bytes > MAX_HEAD_BYTES:
        return 414, f"request target (URL) longer than {MAX_HEAD_BYTES >> 10} KiB"
    if head_bytes > MAX_HEAD_BYTES:
        return 431, f"request headers larger than {MAX_HEAD_BYTES >> 10} KiB"
    return None


def body_length(content_length: str | None, transfer_encoding: bool) -> int | None:
    """The body length a request's head declares: 0 without Content-Length, None when it cannot be known (a
    Transfer-Encoding, chunked say, or a Content-Length that is no plain number). One reading for the protocol, which
    feeds a body to the parser up to its end, and the app (`serve.CloseUnreadBody`), which decides whether to drain it."""
    length = "0" if content_length is None else content_length.strip()
    return int(length) if length.isdigit() and not transfer_encoding else None


LOG = logging.getLogger(__name__)
UVICORN_PARSER_LINE = "Invalid HTTP request received."  # uvicorn's warning for every request its parser refuses
_feeding = threading.local()  # `.songfeat`: True while BoundedHead hands bytes to uvicorn's parser, in this thread


class _ParserLineFilter(logging.Filter):
    """Drops uvicorn's UVICORN_PARSER_LINE while BoundedHead feeds the parser: uvicorn logs it, then calls the
    protocol's send_400_response, whose own line names the client and the problem. Under any other protocol (h11, uvicorn
    run as is) uvicorn's line is kept: nothing else says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(_feeding, "songfeat", False) and record.msg == UVICORN_PARSER_LINE)


PARSER_LINE_FILTER = _ParserLineFilter()
PARSER_REASONS = {"Pause on PRI/Upgrade": "an HTTP/2 connection preface: this server speaks HTTP/1.1 only"}


def _parser_reason(exc: BaseException | None) -> str:
    """What httptools' parser found wrong (`Duplicate Content-Length`) in the error it raised: uvicorn answers every
    one with the same "Invalid HTTP request received.", which names no problem."""
    from httptools import HttpParserCallbackError, HttpParserInvalidURLError

    if isinstance(exc, HttpParserCallbackError) and isinstance(exc.__context__, HttpParserInvalidURLError):
        return "the request target is neither a path (/healthz) nor a URL (http://host/healthz)"
    # (a callback's own error is "User callback error": uvicorn's, not the client's, if ever)
    text = "" if exc is None else str(exc)
    return PARSER_REASONS.get(text, text or "the parser refused it")


def _answer(status: int, message: str) -> bytes:
    """A whole error answer that closes the connection, with a body in Spotify's error shape."""
    body = json.dumps({"error": {"status": status, "message": message}}).encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n".encode()
            + b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


class StalledReader:
    """Mixed into a uvicorn HTTP protocol: a connection whose answer waits in its write buffer (over the transport's
    high-water mark) with none of its bytes taken by the client for SEND_SECONDS is cut, with one log line naming the
    client, its buffer freed and the kernel's dropped (a reset). uvicorn's transport takes a whole answer in one write
    and closing waits for it to be sent, so a client that asked for a large answer (a long track's audio analysis) and
    never read it held that memory and its connection for good, keep-alive time-out or not. Only a stall counts: the
    unsent bytes are looked at every SEND_SECONDS / 4 and any taken since restart the clock, so a client reading
    slowly, however long its answer, is not cut."""

    transport: asyncio.Transport  # (uvicorn's protocol's)
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None
    _send_timer: asyncio.TimerHandle | None = None
    _send_waiting = 0  # bytes unsent at the last look
    _send_moved = 0.0  # loop time they were last seen to shrink

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        self._send_waiting, self._send_moved = self._unsent(), self.loop.time()
        self._watch_send()

    def resume_writing(self) -> None:
        self._stop_send_timer()
        super().resume_writing()  # type: ignore[misc]

    def connection_lost(self, exc) -> None:
        self._stop_send_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _watch_send(self) -> None:
        self._stop_send_timer()
        self._send_timer = self.loop.call_later(SEND_SECONDS / 4, self._look_at_send)

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _unsent(self) -> int:
        """Bytes of the answer the client has not taken: the transport's buffer, and what the kernel holds that the
        client has not acknowledged (Linux's SIOCOUTQ; nothing where it cannot be read). The kernel's part is what moves
        while a client reads slowly: it takes more from the transport only once much of its own buffer (megabytes) is
        free, so the transport's buffer alone stood still for 17 s under a client reading 50 kB/s on loopback."""
        waiting = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        try:
            queued = ioctl(sock.fileno(), TIOCOUTQ, b"\0\0\0\0")  # type: ignore[misc]
        except (AttributeError, TypeError, OSError):  # no socket, no such ioctl here, or not for sockets (macOS)
            return waiting
        return waiting + struct.unpack("i", queued)[0]

    def _look_at_send(self) -> None:
        """Restart the clock if the client took bytes since the last look (growth by other writes is no progress); cut
        the connection when it has taken none for SEND_SECONDS."""
        self._send_timer = None
        waiting, now = self._unsent(), self.loop.time()
        if waiting < self._send_waiting:
            self._send_moved = now
        self._send_waiting = waiting
        if not waiting:  # sent (resume_writing stops the watch; this is in case a transport does not call it)
            return
        if now - self._send_moved < SEND_SECONDS:
            return self._watch_send()
        LOG.warning("songfeat: closed the connection of %s: it read nothing of its answer for %g s (%d bytes unsent)",
                    peer(self.client), SEND_SECONDS, waiting)
        sock = self.transport.get_extra_info("socket")
        try:  # a reset, not a close: the kernel drops what it still holds for the client rather than retrying it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (AttributeError, OSError):  # no socket (a test's transport) or one already gone: aborted all the same
            pass
        self.transport.abort()  # the buffer dropped; uvicorn sees a disconnect


def protocol() -> Any:
    """The protocol class for uvicorn's `http` option: httptools with a bounded head, or without httptools h11 (its
    head bounded by uvicorn's h11_max_incomplete_event_size), both with stalled readers cut (`StalledReader`)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools
        return h11_protocol()
    logging.getLogger("uvicorn.error").addFilter(PARSER_LINE_FILTER)  # (once: a filter already there is not added again)

    class BoundedHead(StalledReader, HttpToolsProtocol):
        """Counts the bytes and the time a request's head takes: too many bytes get 431 (414 when the request line
        alone has that many: its target is what is too long), too long 408, and the connection is closed. Only the
        head's own bytes count: a read that also carries the body (a small upload sent in one go) counts up to the
        blank line that ends the head, and what follows it is fed to the parser on its own, so a pipelined request's
        head in the same read counts towards its own cap (it counted towards none: a head could exceed the cap by one
        read's size). A body is fed likewise only up to where its request can end (its Content-Length, or a chunked
        body's closing blank line), so a head pipelined after a body counts too (it did not: 256 KiB over the cap)."""

        _heading = True  # between requests and inside a head: bytes received count towards the cap
        _head_bytes = 0
        _line_bytes = 0  # the request line's bytes so far (the empty lines a client may send before it aside)
        _line_begun = False
        _line_done = False
        _head_timer = None
        _timer_from_connect = False  # the running clock is a silent connection's, not a head's
        _tail = b""  # the last bytes of a head (or chunked body) so far, to find a blank line split across two reads
        _body_left: int | None = None  # bytes of a Content-Length body still to come (None: chunked)
        _bare = 0  # bytes of the body phase that carried no body data (chunk framing, trailer fields)
        _body_seen = False

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head_timer()  # a connection that never sends a byte is closed too
            self._timer_from_connect = True

        def connection_lost(self, exc) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            while data:
                if self._heading:
                    if self._head_timer is None or (self._timer_from_connect and self._head_bytes == 0 and not self._tail):
                        self._start_head_timer()  # the first bytes of a head: its clock starts
                    fed = self._to_blank_line(data)
                    self._head_bytes += fed
                    if not self._line_done:
                        self._count_line(data[:fed])
                    refusal = head_refusal(self._line_bytes, self._head_bytes)
                    if refusal is not None:  # refused before the parser buffers any of it
                        self._refuse(*refusal)
                        return
                    self._feed(data[:fed])
                else:  # a body, fed up to where its request can end: a head pipelined after it is counted as one
                    if self._body_left is None:
                        fed = self._to_blank_line(data)  # a chunked body ends with a blank line
                    else:
                        fed = min(len(data), self._body_left) or len(data)  # (0 left, no end: an upgrade's; all, as before)
                    self._body_seen = False
                    self._feed(data[:fed])
                    if not self._heading and not self.transport.is_closing():
                        self._bare = 0 if self._body_seen else self._bare + fed
                        if self._bare > MAX_HEAD_BYTES:  # bytes that are no body: a chunked body's trailer fields growing
                            self._refuse(431, f"request trailer fields larger than {MAX_HEAD_BYTES >> 10} KiB")
                            return
                data = data[fed:]  # the rest: a body, or the next pipelined head, counted on its own
                if self.transport.is_closing() or self.transport.get_protocol() is not self:  # closed, or a websocket
                    return  # now: uvicorn hands it the head alone, as when the rest came in the same read

        def _feed(self, data: bytes) -> None:
            """Hand `data` to uvicorn's protocol and its parser, uvicorn's line for a request the parser refuses left out
            (`_ParserLineFilter`): send_400_response logs songfeat's own."""
            _feeding.songfeat = True
            try:
                super().data_received(data)
            finally:
                _feeding.songfeat = False

        def _to_blank_line(self, data: bytes) -> int:
            """How many bytes of `data` come up to the next blank line (one begun in the last read included), or all."""
            seen, before = self._tail + data, len(self._tail)
            end = seen.find(b"\r\n\r\n")
            upto = len(seen) if end < 0 else end + 4
            self._tail = seen[max(0, upto - 3):upto]
            return upto - before

        def _count_line(self, data: bytes) -> None:
            """Add a head's next bytes to its request line's count, up to the line's end."""
            if not self._line_begun:  # empty lines before a request line are allowed (RFC 9112, 2.2)
                data = data.lstrip(b"\r\n")
                self._line_begun = bool(data)
            end = data.find(b"\n")
            self._line_bytes += len(data) if end < 0 else end + 1
            self._line_done = end >= 0

        def on_headers_complete(self) -> None:
            self._heading, self._head_bytes, self._tail, self._bare = False, 0, b"", 0
            target = absolute_form(self.url)
            absolute = target is not None
            if absolute and not target[1].startswith(b"/"):  # `http://host` or `http://host?q`: its path is / (RFC 9112,
                self.url = self.url[:len(self.url) - len(target[1])] + b"/" + target[1]  # 3.2.2), not a parse error
            fields = dict(self.headers)  # the parser refuses a Content-Length beside a Transfer-Encoding, or two
            length = fields.get(b"content-length")  # none: as chunked, fed up to a blank line (an upgrade's bytes)
            self._body_left = None if length is None else body_length(length.decode("latin-1"), b"transfer-encoding" in fields)
            self._line_bytes, self._line_begun, self._line_done = 0, False, False  # for the next request's head
            self._stop_head_timer()
            super().on_headers_complete()
            if absolute:  # uvicorn kept the path alone; its task, not started yet, holds this scope: the app gets the
                self.scope["raw_path"] = self.url.partition(b"?")[0]  # target whole, as h11 gives it (serve.AbsoluteForm)

        def on_body(self, body: bytes) -> None:
            self._body_seen = True
            if self._body_left is not None:
                self._body_left -= len(body)
            super().on_body(body)

        def on_message_complete(self) -> None:
            # the next head's clock starts with its first byte (idle keep-alive has uvicorn's timeout)
            self._heading, self._tail = True, b""
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            """The parser's rejections (a malformed request line, header or length) in Spotify's error shape, saying
            what the parser found (`Duplicate Content-Length`), not uvicorn's `msg`, the same for every one. uvicorn
            calls it only inside data_received's `except httptools.HttpParserError:`, so the error in hand is the
            parser's. Logged in one line naming the client and the problem, in place of uvicorn's "Invalid HTTP request
            received." (until 2026-12-06 both, the one naming nothing beside the client's answer naming it)."""
            reason = _parser_reason(sys.exc_info()[1])
            LOG.warning("songfeat: refused a malformed HTTP request%s: %s",
                        f" from {peer(self.client)}" if self.client else "", reason)
            self._refuse(400, f"malformed HTTP request: {reason}")

        def _start_head_timer(self) -> None:
            self._stop_head_timer()
            self._head_timer = self.loop.call_later(HEAD_SECONDS, self._head_timed_out)

        def _stop_head_timer(self) -> None:
            self._timer_from_connect = False
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._heading and not self.transport.is_closing():
                self._refuse(408, f"the request's headers did not arrive within {HEAD_SECONDS:g} s")

        def _refuse(self, status: int, message: str) -> None:
            self._stop_head_timer()
            self.transport.write(_answer(status, message))
            self.transport.close()

    return BoundedHead


def h11_protocol() -> Any:
    """uvicorn's h11 protocol with stalled readers cut (`StalledReader`): `protocol()`'s where httptools is missing."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return type("StalledReaderH11", (StalledReader, H11Protocol), {})


def uvicorn_options() -> dict:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config`: the bounded protocol, h11's limit to match it, and a
    bounded shutdown (uvicorn otherwise waits for every open request, so one upload sent a byte every minute kept a
    stopped server's process alive for as long as it liked)."""
    return {"http": protocol(), "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
            "timeout_graceful_shutdown": SHUTDOWN_SECONDS}
