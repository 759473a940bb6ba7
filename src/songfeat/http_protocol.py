"""uvicorn's HTTP/1.1 protocol with a cap on the size of a request's head (request line and headers).

httptools, the parser uvicorn prefers, buffers a header whole however large it grows: one client sending a 200-MB
header made the server hold all of it. `protocol()` returns the httptools protocol with a byte count on the head:
past `MAX_HEAD_BYTES` the client gets 431 in Spotify's error shape and the connection is closed. Where httptools
is not installed it returns "h11", whose own limit `uvicorn_options` sets to the same size.
"""
from __future__ import annotations

import json
from typing import Any

MAX_HEAD_BYTES = 64 << 10  # nginx's default allows 4 buffers of 8 KB per header; a cookie-laden browser sends ~4 KB


def _too_large() -> bytes:
    """The whole 431 answer, with a body in Spotify's error shape."""
    body = json.dumps({"error": {"status": 431, "message": f"request headers larger than {MAX_HEAD_BYTES >> 10} KiB"}}).encode()
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


def protocol() -> Any:
    """The protocol class for uvicorn's `http` option: httptools with a bounded head, or "h11" without httptools."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools: h11, bounded by uvicorn's h11_max_incomplete_event_size
        return "h11"

    class BoundedHead(HttpToolsProtocol):
        """Counts the bytes received while a request's head is incomplete; too many get 431 and a closed connection."""

        _heading = True  # between requests and inside a head: bytes received count towards the cap
        _head_bytes = 0

        def data_received(self, data: bytes) -> None:
            heading = self._heading
            super().data_received(data)
            if not (heading and self._heading) or self.transport.is_closing():
                return
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.transport.write(_too_large())
                self.transport.close()

        def on_headers_complete(self) -> None:
            self._heading, self._head_bytes = False, 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._heading = True
            super().on_message_complete()

    return BoundedHead


def uvicorn_options() -> dict:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config`: the bounded protocol, and h11's limit to match it."""
    return {"http": protocol(), "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
