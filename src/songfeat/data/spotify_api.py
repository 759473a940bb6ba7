"""Talking to Spotify's Web API (or a proxy / stand-in for it): endpoints, credentials, retries.

Both endpoints are configurable so `collect` can run against a proxy or a local stand-in:
flag > environment variable > Spotify's own URL. Retries are ours, not spotipy's: spotipy's
urllib3 `Retry` swallows the `Retry-After` header and turns an exhausted 429 into an opaque
"Max Retries", so the client gets a plain requests session and `call` below decides what to do
with each 429 / 5xx / network error.
"""
from __future__ import annotations

import email.utils
import http
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests

from ..errors import SongfeatError, WorkFailed

DEFAULT_API_URL = "https://api.spotify.com/v1/"
DEFAULT_TOKEN_URL = "https://accounts.spotify.com/api/token"
ENV_API_URL = "SONGFEAT_SPOTIFY_API_URL"
ENV_TOKEN_URL = "SONGFEAT_SPOTIFY_TOKEN_URL"
ENV_CLIENT_ID = "SPOTIPY_CLIENT_ID"
ENV_CLIENT_SECRET = "SPOTIPY_CLIENT_SECRET"
TIMEOUT = 20.0  # seconds per HTTP request (connect and read)
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MESSAGE_CHARS = 200  # a proxy's HTML error page is cut to this in error lines

T = TypeVar("T")

# spotipy logs every HTTP error it raises; `call` reports the ones that matter, in one line each.
logging.getLogger("spotipy").addHandler(logging.NullHandler())


class SpotifyAPIError(WorkFailed):
    """The API (or the token endpoint) failed in a way retrying will not fix; str() names the URL. A failure of the
    work (exit status 1), where a bad endpoint or missing credentials are refusals before it (a SongfeatError, 2)."""

    def __init__(self, url: str | None, reason: str, status: int | None = None):
        self.status = status
        super().__init__(url, reason)

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.status))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: exponential backoff for 5xx/network errors, Retry-After for 429.

    `sleep` is injectable so tests can record the waits instead of sitting through them.
    A Retry-After longer than `max_retry_after` is not waited out: the run stops with a clear
    message instead (its progress is saved, so rerunning later continues).
    """

    retries: int = 5  # attempts after the first
    backoff: float = 1.0  # first backoff wait, doubled on each further attempt
    max_backoff: float = 60.0
    max_retry_after: float = 600.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0-based) of a 5xx / network failure."""
        return min(self.max_backoff, self.backoff * (2 ** attempt))

    def wait(self, retry_after: float | None, attempt: int) -> float:
        """Seconds to wait before retry `attempt`: the server's Retry-After, but never less than the own backoff, so a
        server answering "Retry-After: 0" to every request is not hammered in a tight loop."""
        return self.backoff_delay(attempt) if retry_after is None else max(retry_after, self.backoff_delay(attempt))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/garbled."""
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def resolve_endpoints(api_url: str | None = None, token_url: str | None = None) -> tuple[str, str]:
    """(api_url, token_url): explicit value, else $SONGFEAT_SPOTIFY_API_URL / _TOKEN_URL, else Spotify's."""
    api = api_url or os.environ.get(ENV_API_URL) or DEFAULT_API_URL
    token = token_url or os.environ.get(ENV_TOKEN_URL) or DEFAULT_TOKEN_URL
    for name, url in (("API URL", api), ("token URL", token)):
        if not url.startswith(("http://", "https://")):
            raise SongfeatError(url, f"the Spotify {name} must start with http:// or https://")
    if not api.endswith("/"):
        api += "/"  # spotipy joins prefix + "search"
    return api, token


def resolve_credentials(client_id: str | None = None, client_secret: str | None = None) -> tuple[str, str]:
    """(client_id, client_secret) from the arguments or $SPOTIPY_CLIENT_ID / $SPOTIPY_CLIENT_SECRET."""
    cid = client_id or os.environ.get(ENV_CLIENT_ID)
    secret = client_secret or os.environ.get(ENV_CLIENT_SECRET)
    missing = [n for n, v in ((ENV_CLIENT_ID, cid), (ENV_CLIENT_SECRET, secret)) if not v]
    if missing:
        raise SongfeatError(None, f"no Spotify credentials: set {' and '.join(missing)} (or pass --client-id / --client-secret)")
    return str(cid), str(secret)


def _error_text(response: requests.Response) -> str:
    """An error answer's text, for a message: the JSON's own words when it has any, else the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict):
        words = [body.get(k) for k in ("error", "error_description", "message")]
        text = "; ".join(w for w in words if isinstance(w, str) and w)
        if text:
            return text
    return response.text


def _readable_api_error(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """Response hook: give a Web API error spotipy can read (it calls .get on the JSON and its "error").

    A proxy or gateway answering `{"error": "text"}`, a list or a string made spotipy raise
    AttributeError from inside its error handling; such bodies become `{"error": {"message": text}}`.
    """
    if response.status_code < 400:
        return response
    try:
        body = response.json()
    except ValueError:
        return response  # spotipy reads a non-JSON body as text
    if isinstance(body, dict) and isinstance(body.get("error", {}), dict):
        return response
    response._content = json.dumps({"error": {"message": _error_text(response)}}).encode()
    response.encoding = "utf-8"
    return response


def _readable_token_error(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """Response hook: a token-endpoint error whose JSON is not an object becomes `{"error": text}` (spotipy calls .get on it)."""
    if response.status_code < 400:
        return response
    try:
        body = response.json()
    except ValueError:
        return response
    if not isinstance(body, dict):
        response._content = json.dumps({"error": _error_text(response)}).encode()
        response.encoding = "utf-8"
    return response


def _session(hook: Callable[..., requests.Response]) -> requests.Session:
    """A bare requests session (no retry adapter) with one response hook."""
    s = requests.Session()
    s.hooks["response"].append(hook)
    return s


def _valid_token(info: Any, url: str) -> dict[str, Any]:
    """The token endpoint's 200 answer, checked: spotipy raised KeyError / TypeError on one without a token or expiry."""
    expires = info.get("expires_in") if isinstance(info, dict) else None
    if isinstance(expires, str):
        try:
            expires = float(expires)
        except ValueError:
            expires = None
    ok_expiry = isinstance(expires, (int, float)) and not isinstance(expires, bool) and math.isfinite(expires)
    if not (isinstance(info, dict) and isinstance(info.get("access_token"), str) and info["access_token"] and ok_expiry):
        raise requests.exceptions.InvalidJSONError(
            "the token endpoint answered 200 without an access_token and a numeric expires_in",
            request=requests.Request("POST", url))
    return {**info, "expires_in": int(expires)}  # type: ignore[arg-type]


def make_client(
    client_id: str,
    client_secret: str,
    api_url: str = DEFAULT_API_URL,
    token_url: str = DEFAULT_TOKEN_URL,
    timeout: float = TIMEOUT,
) -> Any:
    """A spotipy.Spotify on the client-credentials flow, pointed at `api_url` / `token_url`, without built-in retries."""
    import spotipy
    from spotipy.cache_handler import MemoryCacheHandler
    from spotipy.oauth2 import SpotifyClientCredentials

    class _Credentials(SpotifyClientCredentials):
        """Client credentials posting to a configurable token URL; token errors keep their HTTP status."""

        def __init__(self) -> None:
            # A memory cache: spotipy's default writes a `.cache` file into the working directory.
            super().__init__(client_id, client_secret, requests_session=_session(_readable_token_error),
                             requests_timeout=timeout, cache_handler=MemoryCacheHandler())
            self.OAUTH_TOKEN_URL = token_url  # spotipy reads the URL from this attribute

        def _request_access_token(self) -> dict[str, Any]:
            return _valid_token(super()._request_access_token(), self.OAUTH_TOKEN_URL)

        def forget_token(self) -> None:
            """Drop the cached token so the next request fetches a new one."""
            self.cache_handler.save_token_to_cache(None)

        def _handle_oauth_error(self, http_error: requests.HTTPError) -> None:
            try:
                super()._handle_oauth_error(http_error)
            except spotipy.SpotifyOauthError as e:
                e.http_status = http_error.response.status_code  # type: ignore[attr-defined]
                e.headers = http_error.response.headers  # type: ignore[attr-defined]
                e.url = self.OAUTH_TOKEN_URL  # type: ignore[attr-defined]
                raise

    class _Client(spotipy.Spotify):
        """spotipy.Spotify that, on a 401 (a token expired or revoked before its stated expiry), fetches a new token and asks once more."""

        def _internal_call(self, method: str, url: str, payload: Any, params: Any) -> Any:
            from spotipy.exceptions import SpotifyException

            try:
                return super()._internal_call(method, url, payload, params)
            except SpotifyException as e:
                if e.http_status != 401 or not isinstance(self.auth_manager, _Credentials):
                    raise
                self.auth_manager.forget_token()
                return super()._internal_call(method, url, payload, params)

    # A bare session: no urllib3 Retry adapter, so every 429 / 5xx reaches `call` with its headers.
    sp = _Client(auth_manager=_Credentials(), requests_session=_session(_readable_api_error), requests_timeout=timeout)
    sp.prefix = api_url  # spotipy 2.x keeps the API root in this attribute
    return sp


def _short(msg: str) -> str:
    """A server's message on one line, cut to MESSAGE_CHARS."""
    one = " ".join(str(msg).split()) or "no message"
    return one if len(one) <= MESSAGE_CHARS else one[: MESSAGE_CHARS - 3] + "..."


_POOL_PREFIX = re.compile(r"^(?:<[^>]*>|HTTPS?Connection(?:Pool)?\([^)]*\)): ")


def _network_text(exc: requests.RequestException) -> str:
    """A network failure in its own words: the innermost urllib3 error, without urllib3's "Max retries exceeded with url"
    wrapper (its retries are off here) and host prefix, which filled the cut-off line before the cause ("Connection refused")."""
    inner: BaseException = exc
    for _ in range(5):
        nxt = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else getattr(inner, "reason", None)
        if not isinstance(nxt, BaseException):
            break
        inner = nxt
    return _POOL_PREFIX.sub("", str(inner)) or type(inner).__name__


def _phrase(status: int | None) -> str:
    """HTTP's name for a status ("Unauthorized" for 401), or "" for one it does not name."""
    try:
        return http.HTTPStatus(status).phrase  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _describe(exc: BaseException) -> tuple[str | None, int | None, str, Any]:
    """(url, status, message, headers) of an exception raised by a spotipy call."""
    from spotipy.exceptions import SpotifyException, SpotifyOauthError

    if isinstance(exc, SpotifyException):
        url, _, msg = str(exc.msg).partition(":\n")
        if msg.strip() == "None":  # spotipy's words for an answer without a message (an empty body): "HTTP 401: None"
            msg = _phrase(exc.http_status)
        return url or None, exc.http_status, _short(msg), exc.headers or {}
    if isinstance(exc, SpotifyOauthError):
        return getattr(exc, "url", None), getattr(exc, "http_status", None), _short(str(exc)), getattr(exc, "headers", {}) or {}
    if isinstance(exc, requests.RequestException):
        url = getattr(getattr(exc, "request", None), "url", None)
        return url, None, _short(f"{type(exc).__name__}: {_network_text(exc)}"), {}
    return None, None, _short(str(exc)), {}


def call(fn: Callable[[], T], what: str, policy: RetryPolicy, on_wait: Callable[[str], None] | None = None) -> T:
    """Run one API call, retrying 429 (after Retry-After) and 5xx / network errors (with backoff).

    Raises SpotifyAPIError (carrying the HTTP status) when the error is permanent or retries ran out.
    `what` names the request for messages, e.g. the URL or "search genre:pop offset 50".
    """
    from spotipy.exceptions import SpotifyException, SpotifyOauthError

    attempt = 0
    while True:
        try:
            result = fn()
            if result is None:  # spotipy turns an unparsable body into None
                raise requests.exceptions.InvalidJSONError(f"{what}: response was not JSON")
            return result
        except (SpotifyException, SpotifyOauthError, requests.RequestException) as exc:
            url, status, msg, headers = _describe(exc)
            where = f"{what} at {url.split('?')[0]}" if url else what
            if isinstance(exc, SpotifyOauthError):
                where = f"token request at {url}" if url else f"token request ({what})"
                if status is None or status not in RETRYABLE_STATUS:
                    raise SpotifyAPIError(where, f"token request refused: {msg}; check {ENV_CLIENT_ID} / {ENV_CLIENT_SECRET}", status) from None
            elif status is not None and status not in RETRYABLE_STATUS:
                raise SpotifyAPIError(where, f"HTTP {status}: {msg}", status) from None
            if attempt >= policy.retries:
                raise SpotifyAPIError(where, f"gave up after {attempt + 1} attempt{'s' if attempt else ''}: {'HTTP ' + str(status) + ': ' if status else ''}{msg}", status) from None
            wait = None
            if status == 429 or (status == 503 and headers.get("Retry-After")):
                wait = parse_retry_after(headers.get("Retry-After"))
                if wait is not None and wait > policy.max_retry_after:
                    raise SpotifyAPIError(where, f"rate limited: the server asks to wait {wait:.0f} s, more than the {policy.max_retry_after:.0f} s allowed; progress is saved, rerun later", status) from None
            wait = policy.wait(wait, attempt)
            if on_wait is not None:
                on_wait(f"{where}: {'HTTP ' + str(status) if status else msg}; retrying in {wait:.1f} s")
            policy.sleep(wait)
            attempt += 1
