"""``codebook_braze``: Braze REST answers (``braze.rest``) of calls made with requests or httpx.

There is no official Braze Python SDK; community clients and hand-written code call the REST
API with ``requests`` or ``httpx``. This instrumentor claims requests to a Braze REST host --
``rest.<cluster>.braze.com``, ``rest.<cluster>.braze.eu``, plus the hosts given to
``instrument(hosts=[...])`` or in ``CODEBOOK_BRAZE_HOSTS`` (comma-separated ``host`` or
``host:port``) -- and reads the answer at the HTTP layer (see
:mod:`exporter.instrumentation._http`): the HTTP status becomes ``provider.code`` and the body's
``message``, when it is not ``success``, ``provider.message``. A 2xx whose ``errors`` array
lists non-fatal errors records one ``provider.result`` event per error (its text as
``provider.message``; the mappings' ``2xx`` rule with message ``*`` makes it
``invalid_request``). An answer without Braze's JSON ``message`` (a proxy's 502, an HTML error
page) records no code. The span is the HTTP client span when one is open, else a CLIENT span
``braze.rest`` started around the request. Never recorded: request bodies, user ids, emails,
the API key.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection, Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from . import _http
from ._common import Outcome, Result, single

_log = logging.getLogger(__name__)

SOURCE = "braze.rest"
SPAN_NAME = "braze.rest"
HOSTS_ENV = "CODEBOOK_BRAZE_HOSTS"
_ANY = ("requests >= 2.31, < 3", "httpx >= 0.28, < 1")
_BRAZE_HOST = re.compile(r"rest\.[a-z0-9-]+\.braze\.(?:com|eu)")


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def extract(status: int, body: Any) -> Outcome | None:
    """The Braze result of one answer; None when the body is not Braze's JSON."""
    if not isinstance(body, dict):
        return None
    message = _text(body.get("message"))
    if message is None:
        return None
    code = str(status)
    ok = 200 <= status < 300
    errors = body.get("errors")
    success = message.lower() == "success"
    if success and not errors:  # the usual answer: a shared outcome, nothing to build
        return single(SOURCE, code, ok)
    span = Result(SOURCE, code, message=None if success else message, ok=ok)
    events: list[Result] = []
    if ok and isinstance(errors, list):
        for error in errors:
            text = _text(error.get("type") or error.get("message")) if isinstance(
                error, dict) else _text(error)
            if text is not None:
                events.append(Result(SOURCE, code, message=text, ok=False))
    return Outcome(span, tuple(events))


# The usual success answer as Braze writes it: one flat JSON object whose last member is
# "message": "success", after members with plain keys and scalar values (a dispatch_id,
# attributes_processed ...), none of them "errors". Only JSON whitespace, printable-ASCII strings
# without escapes (so the bytes are valid UTF-8 and no quote hides inside a string), short
# integers (json refuses those of over 4300 digits) and no nesting: a match is exactly what the
# JSON parser reads. An earlier duplicate "message" does not matter: JSON's last member wins.
_WS = rb"[ \t\n\r]*"
_SCALAR = (rb'(?:"[\x20\x21\x23-\x5b\x5d-\x7e]*"'
           rb"|-?(?:0|[1-9][0-9]{0,30})(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null)")
_SUCCESS = re.compile(
    _WS + rb"\{" + _WS
    + rb'(?:"(?!errors")[A-Za-z0-9_]+"' + _WS + rb":" + _WS + _SCALAR + _WS + rb"," + _WS + rb")*"
    + rb'"message"' + _WS + rb":" + _WS + rb'"success"' + _WS + rb"\}" + _WS)


def quick(status: int, body: bytes) -> Outcome | None:
    """``extract(status, json.loads(body))`` for the usual success answer, from the bytes; None
    (not sure: take the full path) for anything else."""
    if _SUCCESS.fullmatch(body) is None:
        return None
    return single(SOURCE, str(status), 200 <= status < 300)


def parse_hosts(spec: Iterable[str]) -> tuple[frozenset[str], frozenset[tuple[str, int]]]:
    """Configured hosts: bare names match any port, ``host:port`` that port only."""
    names: set[str] = set()
    pairs: set[tuple[str, int]] = set()
    for item in spec:
        item = item.strip().lower()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if sep and port.isdigit() and host and not host.endswith(":"):
            pairs.add((host.strip("[]"), int(port)))
        else:
            names.add(item.strip("[]"))
    return frozenset(names), frozenset(pairs)


class BrazeInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Puts the ``braze.rest`` status and message of Braze REST calls on the call's span.

    ``instrument(hosts=[...], tracer_provider=...)``: extra Braze hosts, a list or a
    comma-separated string (added to ``CODEBOOK_BRAZE_HOSTS``, read at instrument time), and
    the provider of the CLIENT span started when no HTTP client span exists (default: the
    global one).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _ANY

    def _check_dependency_conflicts(self) -> Any:
        return get_dependency_conflicts((), _ANY)

    def _instrument(self, **kwargs: Any) -> None:
        conflict = self._check_dependency_conflicts()
        if conflict is not None:
            _log.debug("codebook_braze not enabled: %s", conflict)
            self._matcher = None
            return
        hosts = kwargs.get("hosts", ())
        if isinstance(hosts, str):
            hosts = hosts.split(",")
        names, pairs = parse_hosts([*os.environ.get(HOSTS_ENV, "").split(","), *hosts])
        tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))
        interest = _http.Interest(SPAN_NAME, extract, tracer, quick)

        def matcher(host: str, port: int | None, path: str) -> _http.Interest | None:
            if host in names or (host, port) in pairs or (
                    host.startswith("rest.") and _BRAZE_HOST.fullmatch(host)):
                return interest
            return None

        self._matcher = matcher
        _http.register(matcher)

    def _uninstrument(self, **kwargs: Any) -> None:
        matcher = getattr(self, "_matcher", None)
        if matcher is not None:
            _http.unregister(matcher)
            self._matcher = None
