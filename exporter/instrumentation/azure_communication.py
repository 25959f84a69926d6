"""``codebook_azure_communication``: codes of Azure Communication Services calls.

Wraps azure-core's ``Pipeline.run`` and ``AsyncPipeline.run`` (so sync and ``.aio`` clients
alike) and reads the final answer of requests to ACS paths, after retries:

- Call Automation (``/calling/...``, ``azure-communication-callautomation``):
  ``azure.acs.call_automation``, HTTP status -> ``provider.code``, the body's ``error.code`` ->
  ``provider.subcode`` (what ``HttpResponseError.status_code`` / ``.error.code`` carry);
- Chat (``/chat/...``, ``azure-communication-chat``): ``azure.acs.chat``, likewise;
- SMS send (``POST /sms``, ``azure-communication-sms``): ``azure.acs.sms_send``, the HTTP status
  of every recipient of the 202 answer (``SmsSendResult.http_status_code``); several recipients
  give one ``provider.result`` event each and the first failure on the span. A request refused
  whole (401, 400, ...) records its status and ``error.code``.

A 2xx records its status (successes are counted). A failure whose body is not ACS's
``{"error": {"code": ...}}`` (a proxy's 502, a connection refused) records nothing. The span
is the SDK's own operation span when azure-core tracing is on (e.g. ``SmsClient.send``); else
the HTTP client span of ``opentelemetry-instrumentation-requests`` (sync clients), read
through the requests hook of :mod:`exporter.instrumentation._http` while it is open; else a
CLIENT span covering the pipeline run (``acs.sms.send``, ``acs.call_automation``,
``acs.chat``), recorded when the answer is in (the ``.aio`` clients' aiohttp span has ended by
then). Never recorded: phone numbers, message text, thread topics, tokens, keys, error
messages.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import Span, SpanKind
from wrapt import wrap_function_wrapper

from . import _http
from ._common import (
    Outcome,
    Result,
    as_code,
    http_attributes,
    is_client_span,
    mark_failed,
    outcome_of,
    record,
    single,
    warn_once,
)

_log = logging.getLogger(__name__)

CALL_AUTOMATION = "azure.acs.call_automation"
CHAT = "azure.acs.chat"
SMS_SEND = "azure.acs.sms_send"
_CORE = ("azure-core >= 1.41, < 2",)
_ANY = (
    "azure-communication-callautomation >= 1.6, < 2",
    "azure-communication-chat >= 1.3, < 2",
    "azure-communication-sms >= 1.1, < 2",
)


def _body(response: Any) -> Any:
    try:
        return _http.loads(response.body())
    except Exception:  # an unread stream, not JSON, not UTF-8: no body to read
        return None


def _error_code(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    return as_code(error.get("code")) if isinstance(error, dict) else None


def status_and_error(source: str, status: int, body: Any) -> Outcome | None:
    """Call Automation and Chat: the status, with ``error.code`` as subcode on a failure."""
    if 200 <= status < 300:
        return single(source, str(status))
    subcode = _error_code(body)
    if subcode is None:
        return None
    return Outcome(Result(source, str(status), subcode, ok=False))


def sms_send(status: int, body: Any) -> Outcome | None:
    """SMS send: one result per recipient of a 202, else the refused request's status."""
    if status != 202:
        return status_and_error(SMS_SEND, status, body) if status >= 300 else None
    values = body.get("value") if isinstance(body, dict) else None
    if not isinstance(values, list):
        return None
    if len(values) == 1 and isinstance(values[0], dict):  # the usual answer: one recipient
        code = as_code(values[0].get("httpStatusCode"))
        return None if code is None else single(SMS_SEND, code,
                                                values[0].get("successful") is True)
    results = []
    for item in values:
        if not isinstance(item, dict):
            continue
        code = as_code(item.get("httpStatusCode"))
        if code is not None:
            ok = item.get("successful") is True
            results.append(Result(SMS_SEND, code, ok=ok))
    return outcome_of(results)


def _classify(method: str, path: str) -> tuple[str, str] | None:
    """(span name, source) of an ACS request, or None for any other Azure request."""
    if path == "/sms" and method == "POST":
        return "acs.sms.send", SMS_SEND
    if path.startswith("/calling/"):
        return "acs.call_automation", CALL_AUTOMATION
    if path.startswith("/chat/"):
        return "acs.chat", CHAT
    return None


def outcome_for(source: str, status: int, body: Any) -> Outcome | None:
    """The outcome of one ACS answer (decoded JSON body, or None) for ``source``."""
    if source == SMS_SEND:
        return sms_send(status, body)
    return status_and_error(source, status, body)


class _Run:
    """One claimed pipeline run, and the span its result goes on.

    azure-core tracing on: its operation span (current while the pipeline runs). Otherwise the
    run is marked in a context variable, so the requests hook (:mod:`._http`) records each
    answer on the HTTP client span of ``opentelemetry-instrumentation-requests`` while it is
    open (``seen``); when no such span saw the answer (no HTTP instrumentation, or the aiohttp
    transport of the ``.aio`` clients, whose span ends before azure-core reads the body), a
    CLIENT span covering the run is recorded once the answer is in.
    """

    __slots__ = ("host", "interest", "method", "name", "path", "port", "seen", "source", "start",
                 "target", "token", "tracer")

    def __init__(self, interest: _http.Interest, source: str, method: str,
                 url: tuple[str, int | None, str]) -> None:
        self.interest, self.source, self.method = interest, source, method
        self.tracer, self.name = interest.tracer, interest.span_name
        self.host, self.port, self.path = url
        self.seen = False
        self.token: contextvars.Token[_Run | None] | None = None
        current = trace.get_current_span()
        scope = getattr(current, "instrumentation_scope", None)
        if current.is_recording() and scope is not None and scope.name.startswith("azure"):
            self.target: Span | None = current
        else:
            self.target = None
            self.start = time.time_ns()
            self.token = _active.set(self)

    def finish(self, pipeline_response: Any, exc: BaseException | None) -> None:
        """Record the result; called once, in a ``finally``. Never raises."""
        try:
            if self.token is not None:
                _active.reset(self.token)
            if self.seen:
                return
            outcome = status = None
            if pipeline_response is not None:
                response = pipeline_response.http_response
                status = int(response.status_code)
                outcome = outcome_for(self.source, status, _body(response))
            if self.target is not None:
                if outcome is not None:
                    record(self.target, outcome)
                return
            span = self.tracer.start_span(
                self.name, kind=SpanKind.CLIENT, start_time=self.start,
                attributes=http_attributes(self.method, self.host, self.port))
            if exc is not None:
                mark_failed(span, exc)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 400 and outcome is None:
                    span.set_attribute("error.type", str(status))
            if outcome is not None:
                record(span, outcome)
            span.end()
        except Exception as failure:
            warn_once(self.source, failure)


_active: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("codebook_acs_run",
                                                                     default=None)


def _over_http(host: str, port: int | None, path: str) -> _http.Interest | None:
    """The requests hook's matcher: the request of a claimed run, under an HTTP client span."""
    run = _active.get()
    # The path check keeps out other requests made while the run is active (a token fetch).
    if run is None or path != run.path or not is_client_span(trace.get_current_span()):
        return None
    return run.interest


def _answered_over_http(source: str) -> _http.Extract:
    """The requests hook's reader for ``source``: marks the active run as seen (so it records
    nothing more) and reads the answer."""

    def extract(status: int, body: Any) -> Outcome | None:
        run = _active.get()
        if run is not None:
            run.seen = True
        return outcome_for(source, status, body)

    return extract


def _claim(interests: dict[str, _http.Interest], args: Any, kwargs: Any) -> _Run | None:
    try:
        request = args[0] if args else kwargs["request"]
        method = str(request.method).upper()
        url = _http.split(request.url)
        claimed = _classify(method, url[2])
        if claimed is None:
            return None
        return _Run(interests[claimed[1]], claimed[1], method, url)
    except Exception as exc:
        warn_once("azure pipeline hook", exc)
        return None


class AzureCommunicationInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Puts ACS Call Automation, Chat and SMS-send codes on the operation's span.

    ``instrument(tracer_provider=...)`` picks the provider of the CLIENT span started when
    azure-core tracing is off (default: the global one).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return (*_CORE, *_ANY)

    def _check_dependency_conflicts(self) -> Any:
        return get_dependency_conflicts(_CORE, _ANY)

    def _instrument(self, **kwargs: Any) -> None:
        conflict = self._check_dependency_conflicts()
        if conflict is not None:
            _log.debug("codebook_azure_communication not enabled: %s", conflict)
            self._on = False
            return
        tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))
        # One Interest per source, built here rather than per run.
        interests = {source: _http.Interest(name, _answered_over_http(source), tracer)
                     for name, source in (("acs.sms.send", SMS_SEND),
                                          ("acs.call_automation", CALL_AUTOMATION),
                                          ("acs.chat", CHAT))}

        def run(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            claimed = _claim(interests, args, kwargs)
            if claimed is None:
                return wrapped(*args, **kwargs)
            response = error = None
            try:
                response = wrapped(*args, **kwargs)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                claimed.finish(response, error)

        async def run_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            claimed = _claim(interests, args, kwargs)
            if claimed is None:
                return await wrapped(*args, **kwargs)
            response = error = None
            try:
                response = await wrapped(*args, **kwargs)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                claimed.finish(response, error)

        wrap_function_wrapper("azure.core.pipeline", "Pipeline.run", run)
        wrap_function_wrapper("azure.core.pipeline", "AsyncPipeline.run", run_async)
        _http.register(_over_http)
        self._on = True

    def _uninstrument(self, **kwargs: Any) -> None:
        if not getattr(self, "_on", False):
            return
        import azure.core.pipeline

        unwrap(azure.core.pipeline.Pipeline, "run")
        unwrap(azure.core.pipeline.AsyncPipeline, "run")
        _http.unregister(_over_http)
        self._on = False
