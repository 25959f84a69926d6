"""HTTP-level hooks for providers reached with ``requests`` or ``httpx`` (Vonage, Braze).

The HTTP client span of ``opentelemetry-instrumentation-requests`` / ``-httpx`` ends before
the SDK returns, and a SpanProcessor never sees bodies, so the code has to be read while that
span is still open. These hooks wrap the layer *below* those instrumentations, where their span
is the current one whatever order the instrumentors were loaded in:
``requests.adapters.HTTPAdapter.send`` (inside ``Session.send``) and httpcore's connection pools
(inside ``httpx.HTTPTransport.handle_request`` and its async twin).

An instrumentor registers a :data:`Matcher`; for a request it claims, the hook reads the
(small, JSON) body, asks the matcher's ``extract`` for an :class:`Outcome` and writes it on the
current span when that is a recording CLIENT span, else on a CLIENT span it starts around the
request. Requests nobody claims cost one matcher call each. The hooks never raise their own
errors and never change what the HTTP library returns or raises: a body they read is handed on
intact (``requests`` caches it as it would; for httpx the stream is replayed).
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import Span, SpanKind, Tracer
from wrapt import wrap_function_wrapper

from ._common import (
    EVENT_NAME,
    MAX_BODY_BYTES,
    Outcome,
    http_attributes,
    mark_failed,
    warn_once,
)

# extract(status, body) -> Outcome | None; body is the decoded JSON document, or None when the
# response had no readable JSON body.
Extract = Callable[[int, Any], "Outcome | None"]
# quick(status, body) -> Outcome | None: a shortcut for the usual answer, read from the raw
# (identity-encoded) bytes. It must return exactly what extract(status, loads(body)) returns,
# or None whenever it is not sure; None sends the body down the full path.
Quick = Callable[[int, bytes], "Outcome | None"]


@dataclass(frozen=True, slots=True)
class Interest:
    """A matcher's claim on one request: the name of a span to start if needed, and how to read
    the response."""

    span_name: str
    extract: Extract
    tracer: Tracer
    quick: Quick | None = None


# matcher(host, port, path) -> Interest | None; host lower-case without port.
Matcher = Callable[[str, "int | None", str], "Interest | None"]

# url -> (host, port, path) as urlsplit reads them. SDKs call a few fixed endpoints, so the
# split of each request URL is looked up rather than redone; bounded (cleared when full) for
# clients whose URLs vary (ids in paths).
_SPLITS: dict[str, tuple[str, int | None, str]] = {}
_MAX_SPLITS = 256
# (host, port, target) of an httpcore URL -> its (host, port, path) as read here; same reason
# and bound as _SPLITS.
_TARGETS: dict[tuple[bytes, int | None, bytes], tuple[str, int | None, str]] = {}
_DECODE = json.JSONDecoder().decode

_lock = threading.Lock()
_matchers: tuple[Matcher, ...] = ()
_wrapped: list[tuple[Any, str]] = []


def register(matcher: Matcher) -> None:
    """Claim requests with ``matcher``; the hooks are installed with the first matcher."""
    global _matchers
    with _lock:
        if matcher in _matchers:
            return
        _matchers = (*_matchers, matcher)
        if len(_matchers) == 1:
            _install()


def unregister(matcher: Matcher) -> None:
    """Stop claiming requests with ``matcher``; the hooks go with the last matcher."""
    global _matchers
    with _lock:
        if matcher not in _matchers:
            return
        _matchers = tuple(m for m in _matchers if m is not matcher)
        if not _matchers:
            for owner, name in reversed(_wrapped):
                unwrap(owner, name)
            _wrapped.clear()


def _install() -> None:
    try:
        import requests.adapters
    except ImportError:
        pass
    else:
        wrap_function_wrapper(requests.adapters.HTTPAdapter, "send", _requests_send)
        _wrapped.append((requests.adapters.HTTPAdapter, "send"))
    try:
        import httpcore
    except ImportError:
        pass
    else:
        wrap_function_wrapper(httpcore.ConnectionPool, "handle_request", _httpcore_send)
        _wrapped.append((httpcore.ConnectionPool, "handle_request"))
        wrap_function_wrapper(httpcore.AsyncConnectionPool, "handle_async_request",
                              _httpcore_send_async)
        _wrapped.append((httpcore.AsyncConnectionPool, "handle_async_request"))


def split(url: str) -> tuple[str, int | None, str]:
    """``url``'s lower-case host (``""`` when none), port and path, as :func:`urlsplit` reads
    them; raises ``ValueError`` as ``urlsplit`` does for a malformed URL or port."""
    parts = _SPLITS.get(url)
    if parts is None:
        u = urlsplit(url)
        parts = ((u.hostname or "").lower(), u.port, u.path)
        if len(_SPLITS) >= _MAX_SPLITS:
            _SPLITS.clear()
        _SPLITS[url] = parts
    return parts


def _claim(host: str, port: int | None, path: str) -> Interest | None:
    for matcher in _matchers:
        interest = matcher(host, port, path)
        if interest is not None:
            return interest
    return None


class _Call:
    """The span a claimed request's outcome goes on: the current CLIENT span, or one started
    here (and made current, so lower instrumentations nest under it)."""

    __slots__ = ("interest", "own", "target", "token")

    def __init__(self, interest: Interest, method: str, host: str, port: int | None) -> None:
        self.interest = interest
        current = trace.get_current_span()
        self.own: Span | None = None
        self.token: object | None = None
        # is_client_span, inlined: this runs once per claimed request.
        if current.is_recording() and getattr(current, "kind", None) is SpanKind.CLIENT:
            self.target = current
        else:
            self.own = interest.tracer.start_span(
                interest.span_name, kind=SpanKind.CLIENT,
                attributes=http_attributes(method, host, port))
            self.token = context.attach(trace.set_span_in_context(self.own))
            self.target = self.own

    def failed(self, exc: BaseException) -> None:
        if self.own is not None:
            mark_failed(self.own, exc)

    def answered(self, status: int, body: bytes | None, encoding: str) -> None:
        try:
            interest = self.interest
            outcome = None
            if body is None:
                outcome = interest.extract(status, None)
            elif not encoding and type(body) is bytes:
                # The usual answer: the extractor's byte shortcut, else _json inlined.
                if interest.quick is not None:
                    outcome = interest.quick(status, body)
                if outcome is None:
                    try:
                        doc = _DECODE(body.decode("utf-8"))
                    except ValueError:
                        doc = _json(body, encoding)
                    outcome = interest.extract(status, doc)
            else:
                outcome = interest.extract(status, _json(body, encoding))
            if outcome is not None:
                self.target.set_attributes(outcome.attrs)  # record(), inlined
                for result in outcome.events:
                    self.target.add_event(EVENT_NAME, result.attributes())
            if self.own is not None:
                self.own.set_attribute("http.response.status_code", status)
                if status >= 400 and outcome is None:
                    self.own.set_attribute("error.type", str(status))
        except Exception as exc:  # the hook never raises into the application
            warn_once(self.interest.span_name, exc)

    def close(self) -> None:
        if self.token is not None:
            context.detach(self.token)  # type: ignore[arg-type]
        if self.own is not None:
            self.own.end()


def _start(interest: Interest, method: str, host: str, port: int | None) -> _Call | None:
    try:
        return _Call(interest, method, host, port)
    except Exception as exc:  # a broken tracer provider must not break the call
        warn_once(interest.span_name, exc)
        return None


def loads(body: Any) -> Any:
    """``json.loads(body)``, same result and errors, with a shortcut for the usual answer: UTF-8
    bytes (skips json.loads's encoding detection)."""
    if type(body) is bytes:
        try:
            return _DECODE(body.decode("utf-8"))
        except ValueError:  # a BOM, UTF-16/32, or not JSON: json.loads decides, as before
            pass
    return json.loads(body)


def _json(body: bytes | None, encoding: str) -> Any:
    if body is None:
        return None
    try:
        if encoding in ("gzip", "x-gzip", "deflate"):
            body = zlib.decompressobj(zlib.MAX_WBITS | 32).decompress(body, MAX_BODY_BYTES)
        elif encoding not in ("", "identity"):
            return None
        return loads(body)
    except (ValueError, zlib.error):
        return None


def _wanted(status: int, content_type: str, length: str | None) -> bool:
    """Read the body only when it is a JSON answer of reasonable size (not a redirect)."""
    if 300 <= status < 400 or "json" not in content_type.lower():
        return False
    if length is None:
        return True
    try:
        return int(length) <= MAX_BODY_BYTES
    except ValueError:
        return False


# ---- requests -----------------------------------------------------------------------------


def _requests_send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if not _matchers:
        return wrapped(*args, **kwargs)
    try:
        request = args[0] if args else kwargs["request"]
        host, port, path = split(request.url)
        interest = _claim(host, port, path)
        method = str(request.method)
    except Exception as exc:
        warn_once("requests hook", exc)
        interest = None
    call = _start(interest, method, host, port) if interest is not None else None
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        try:
            status = int(response.status_code)
            stream = kwargs.get("stream", args[1] if len(args) > 1 else False)
            headers: Mapping[str, str] = response.headers
            wanted = not stream and _wanted(status, headers.get("Content-Type", ""),
                                            headers.get("Content-Length"))
        except Exception as exc:  # not a requests.Response as HTTPAdapter makes them
            warn_once("requests hook", exc)
            return response
        # Session.send reads the body right after this returns (stream=False): reading it here
        # only moves that read into the HTTP span; its errors are the SDK's own.
        body = response.content if wanted else None
        # requests has already undone Content-Encoding.
        call.answered(status, body, "")
        return response
    finally:
        call.close()


# ---- httpx (httpcore) -----------------------------------------------------------------------


_WANTED_HEADERS = frozenset((b"content-type", b"content-length", b"content-encoding"))


class _Replay:
    """An httpcore response stream whose bytes were read ahead: yields them, closes the original
    (which releases the connection) when httpx closes it."""

    __slots__ = ("_data", "_original")

    def __init__(self, data: bytes, original: Any) -> None:
        self._data = data
        self._original = original

    def __iter__(self) -> Iterator[bytes]:
        return iter((self._data,) if self._data else ())

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._data:
            yield self._data

    def close(self) -> None:
        self._original.close()

    async def aclose(self) -> None:
        await self._original.aclose()


def _prepare(request: Any) -> _Call | None:
    """The call of a claimed httpcore request, else None (one frame: it runs per request)."""
    if not _matchers:
        return None
    try:
        url = request.url
        key = (url.host, url.port, url.target)  # bytes, int | None, bytes (httpcore.URL)
        parts = _TARGETS.get(key)
        if parts is None:
            parts = (bytes(key[0]).decode("ascii", "replace").lower(), key[1],
                     bytes(key[2]).decode("ascii", "replace").split("?", 1)[0])
            if len(_TARGETS) >= _MAX_SPLITS:
                _TARGETS.clear()
            _TARGETS[key] = parts
        host, port, path = parts
        interest = _claim(host, port, path)
        if interest is None:
            return None
        method = bytes(request.method).decode("ascii", "replace")
    except Exception as exc:
        warn_once("httpx hook", exc)
        return None
    return _start(interest, method, host, port)


def _read_ahead(response: Any) -> tuple[int, bool, str] | None:
    """(status, read the body?, content encoding), or None for a response of unknown shape.

    The headers are read in one pass; the first of each wins."""
    try:
        status = int(response.status)
        found: dict[bytes, str] = {}
        for key, value in response.headers:
            name = bytes(key).lower()
            if name in _WANTED_HEADERS and name not in found:
                found[name] = bytes(value).decode("latin-1")
        wanted = _wanted(status, found.get(b"content-type", ""), found.get(b"content-length"))
        encoding = found.get(b"content-encoding", "").strip().lower()
    except Exception as exc:
        warn_once("httpx hook", exc)
        return None
    return status, wanted, encoding


def _httpcore_send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    call = _prepare(args[0] if args else kwargs.get("request"))
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        shape = _read_ahead(response)
        if shape is None:
            return response
        status, wanted, encoding = shape
        body = None
        if wanted:
            original = response.stream
            try:
                body = b"".join(original)
            except BaseException:
                original.close()
                raise
            response.stream = _Replay(body, original)
        call.answered(status, body, encoding)
        return response
    finally:
        call.close()


async def _httpcore_send_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    call = _prepare(args[0] if args else kwargs.get("request"))
    if call is None:
        return await wrapped(*args, **kwargs)
    try:
        try:
            response = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        shape = _read_ahead(response)
        if shape is None:
            return response
        status, wanted, encoding = shape
        body = None
        if wanted:
            original = response.stream
            try:
                body = b"".join([part async for part in original])
            except BaseException:
                await original.aclose()
                raise
            response.stream = _Replay(body, original)
        call.answered(status, body, encoding)
        return response
    finally:
        call.close()
