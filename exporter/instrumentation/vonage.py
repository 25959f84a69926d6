"""``codebook_vonage``: the ``status`` of every message of a Vonage ``Sms.send`` (``vonage.sms``).

Vonage answers an SMS submission with HTTP 200 and a body listing each message part's
``status``; the SDK (``vonage`` 4.x: ``vonage-sms``, ``vonage-http-client``) returns an
``SmsResponse`` when every status is ``"0"``, raises ``SmsError`` (code only in its text) for a
single failed message and ``PartialFailureError`` for a multi-part message with a failed part.
All three come from the same body, which this instrumentor reads at the HTTP layer (see
:mod:`exporter.instrumentation._http`) while ``Sms.send`` is running: the statuses go on the
HTTP client span of ``opentelemetry-instrumentation-requests`` when there is one, else on a
CLIENT span ``vonage.sms.send`` started around the request. One message: its status on the
span. Several: the first non-zero status on the span and one ``provider.result`` event per
message. HTTP errors (401, 429 without a JSON SMS body, ...) carry no SMS status and get no
code. Never recorded: recipients, sender, text, message ids, credentials.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from . import _http
from ._common import Outcome, Result, as_code, outcome_of, single

_log = logging.getLogger(__name__)

SOURCE = "vonage.sms"
SPAN_NAME = "vonage.sms.send"
_DEPENDENCIES = ("vonage-sms >= 1.2, < 2", "vonage-http-client >= 1.5, < 2")

_in_send: contextvars.ContextVar[bool] = contextvars.ContextVar("codebook_vonage_send",
                                                                  default=False)


def extract(status: int, body: Any) -> Outcome | None:
    """The SMS statuses of a ``/sms/json`` answer; None when the body is not one."""
    if not 200 <= status < 300 or not isinstance(body, dict):
        return None
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    if len(messages) == 1:  # the usual answer: one message, its status on the span
        message = messages[0]
        code = as_code(message.get("status")) if isinstance(message, dict) else None
        return None if code is None else single(SOURCE, code, code == "0")
    results = []
    for message in messages:
        code = as_code(message.get("status")) if isinstance(message, dict) else None
        if code is not None:
            results.append(Result(SOURCE, code, ok=code == "0"))
    return outcome_of(results)


def _send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    token = _in_send.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _in_send.reset(token)


class VonageInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Puts the ``vonage.sms`` status of ``Sms.send`` on the call's span.

    ``instrument(tracer_provider=...)`` picks the provider of the CLIENT span started when no
    HTTP client span exists (default: the global one).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _DEPENDENCIES

    def _instrument(self, **kwargs: Any) -> None:
        conflict = get_dependency_conflicts(_DEPENDENCIES)
        if conflict is not None:
            _log.debug("codebook_vonage not enabled: %s", conflict)
            self._matcher = None
            return
        tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))
        interest = _http.Interest(SPAN_NAME, extract, tracer)

        def matcher(host: str, port: int | None, path: str) -> _http.Interest | None:
            return interest if _in_send.get() and path.endswith("/sms/json") else None

        self._matcher = matcher
        wrap_function_wrapper("vonage_sms.sms", "Sms.send", _send)
        _http.register(matcher)

    def _uninstrument(self, **kwargs: Any) -> None:
        matcher = getattr(self, "_matcher", None)
        if matcher is None:
            return
        unwrap(importlib.import_module("vonage_sms.sms").Sms, "send")
        _http.unregister(matcher)
        self._matcher = None
