"""The instrumentation hooks' shortcuts give exactly what the plain library calls give.

``_http.loads`` skips json.loads's encoding detection for UTF-8 bytes, ``_http.split`` caches
urlsplit per URL, and the usual single-result outcomes are shared objects: each must be
indistinguishable from the slow path it replaces.
"""

from __future__ import annotations

import codecs
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from exporter.instrumentation import _http
from exporter.instrumentation._common import Outcome, Result, outcome_of, single

BODIES = [
    pytest.param(b'{"messages":[{"status":"0"}]}', id="utf8-object"),
    pytest.param(b' [1, 2.5, "x", null] ', id="utf8-array-spaces"),
    pytest.param(codecs.BOM_UTF8 + b'{"a": 1}', id="utf8-bom"),
    pytest.param('{"a": "\u00e9"}'.encode("utf-16"), id="utf16-bom"),
    pytest.param('{"a": 1}'.encode("utf-16-le"), id="utf16-le"),
    pytest.param('{"a": 1}'.encode("utf-32"), id="utf32"),
    pytest.param(b'{"a": "\xff"}', id="invalid-utf8"),
    pytest.param(b'{"a": 1', id="truncated"),
    pytest.param(b"", id="empty"),
    pytest.param(b'"\x00"', id="nul-in-string"),
    pytest.param(b"<html>502</html>", id="html"),
    pytest.param('{"a": 1}', id="str-not-bytes"),
]


def _outcome_of(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as exc:  # the same exception type, not just "an error"
        return "raised", type(exc)


@pytest.mark.parametrize("body", BODIES)
def test_loads_is_json_loads(body: Any) -> None:
    assert _outcome_of(lambda: _http.loads(body)) == _outcome_of(lambda: json.loads(body))


URLS = [
    pytest.param("https://rest.iad-01.braze.com/users/track", id="plain"),
    pytest.param("http://127.0.0.1:8080/sms?api-version=2021-03-07", id="port-query"),
    pytest.param("https://User:Pw@Rest.FRA-02.Braze.EU:443/a/b#frag", id="userinfo-case"),
    pytest.param("http://[::1]:9000/calling/x", id="ipv6"),
    pytest.param("http://h/", id="root"),
    pytest.param("http://h", id="no-path"),
]


@pytest.mark.parametrize("url", URLS)
def test_split_is_urlsplit(url: str) -> None:
    u = urlsplit(url)
    expected = ((u.hostname or "").lower(), u.port, u.path)
    assert _http.split(url) == expected
    assert _http.split(url) == expected  # the cached answer too


def test_split_raises_like_urlsplit_and_caches_nothing() -> None:
    with pytest.raises(ValueError):
        _http.split("http://h:notaport/x")
    assert "http://h:notaport/x" not in _http._SPLITS


def test_split_cache_is_bounded() -> None:
    for i in range(_http._MAX_SPLITS * 2):
        _http.split(f"http://h/{i}")
    assert len(_http._SPLITS) <= _http._MAX_SPLITS


@pytest.mark.parametrize("result", [
    pytest.param(Result("vonage.sms", "0"), id="ok"),
    pytest.param(Result("vonage.sms", "4", ok=False), id="failed"),
    pytest.param(Result("braze.rest", "400", message="bad", ok=False), id="message"),
    pytest.param(Result("azure.acs.chat", "404", "NotFound", ok=False), id="subcode"),
])
def test_single_result_outcome_equals_a_built_one(result: Result) -> None:
    built = Outcome(result)
    got = outcome_of([result])
    assert got == built and got is not None and got.attrs == result.attributes()
    if result.subcode is None and result.message is None:
        assert got is single(result.source, result.code, result.ok)  # shared
