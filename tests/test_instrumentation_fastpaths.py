"""The instrumentation hooks' shortcuts give exactly what the plain library calls give.

``_http.loads`` skips json.loads's encoding detection for UTF-8 bytes, ``_http.split`` caches
urlsplit per URL (and the httpcore hook its reading of each URL), the usual single-result
outcomes are shared objects, and ``braze.quick`` reads Braze's usual success answer from the
bytes: each must be indistinguishable from the slow path it replaces.
"""

from __future__ import annotations

import codecs
import json
import random
from typing import Any
from urllib.parse import urlsplit

import httpcore
import pytest

from exporter.instrumentation import _http, braze
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


# (body, does braze.quick answer it itself?). Whatever quick answers must be exactly what the
# full path (decode the JSON, braze.extract) gives; where it is not sure it must say None.
BRAZE_BODIES = [
    (b'{"message":"success"}', True, "canonical"),
    (b'{"message": "success"}', True, "space-after-colon"),
    (b' \r\n\t{ "message" :\n"success" }\n', True, "json-whitespace"),
    (b'{"attributes_processed":1,"message":"success"}', True, "users-track"),
    (b'{"dispatch_id":"a1b2-c3_d4","message":"success"}', True, "messages-send"),
    (b'{"a":-1.5e+3,"b":true,"c":false,"d":null,"e":"","message":"success"}', True, "scalars"),
    (b'{"message":"queued","message":"success"}', True, "duplicate-message-last-wins"),
    (b'{"errors_count":0,"message":"success"}', True, "key-starting-with-errors"),
    (b'{"message":"success","errors":[]}', False, "empty-errors-after"),
    (b'{"errors":[],"message":"success"}', False, "empty-errors-before"),
    (b'{"errors":null,"message":"success"}', False, "null-errors"),
    (b'{"errors":["bad attr"],"message":"success"}', False, "non-empty-errors"),
    (b'{"message":"success","errors":[{"type":"x","input_array":"attributes","index":0}]}',
     False, "errors-objects"),
    (b'{"message":"success","message":"queued"}', False, "duplicate-message-first-success"),
    (b'{"message":"success","x":1}', False, "message-not-last"),
    (b'{"message":"Success"}', False, "capitalised"),
    (b'{"message":" success "}', False, "padded-message"),
    (b'{"message":"succes\\u0073"}', False, "escaped-message"),
    (b'{"message":"success\\""}', False, "escaped-quote-in-message"),
    (b'{"note":"\\"message\\":\\"success\\"","message":"bad"}', False, "success-inside-escapes"),
    (b'{"note":"x\\",\\"message\\":\\"success","message":"bad"}', False,
     "escaped-quotes-fake-member"),
    (b'{"note":"{\\"message\\":\\"success\\"}"}', False, "success-inside-string"),
    (b'{"nested":{"message":"success"}}', False, "nested-object"),
    (b'{"nested":{"a":1},"message":"success"}', False, "nested-before"),
    (b'{"list":[1],"message":"success"}', False, "array-before"),
    (b'[{"message":"success"}]', False, "array-body"),
    (b'"success"', False, "string-body"),
    (b'\xef\xbb\xbf{"message":"success"}', False, "utf8-bom"),
    ('{"message":"success"}'.encode("utf-16"), False, "utf16"),
    (b'{"name":"\xff","message":"success"}', False, "invalid-utf8"),
    (b'{"name":"\xc3\xa9","message":"success"}', False, "non-ascii-utf8"),
    (b'{"message":"success"', False, "truncated"),
    (b'{"message":"success"}}', False, "trailing-brace"),
    (b'{"message":"success"} x', False, "trailing-garbage"),
    (b'{"message":"success",}', False, "trailing-comma"),
    (b"{'message':'success'}", False, "single-quotes"),
    (b'{"n":NaN,"message":"success"}', False, "nan"),
    (b'{"n":01,"message":"success"}', False, "leading-zero"),
    (b'{"n":' + b"9" * 5000 + b',"message":"success"}', False, "int-too-long-for-json"),
    (b'\x0b{"message":"success"}', False, "vertical-tab-not-json-space"),
    (b'{"message":"error","errors":[]}', False, "error-message"),
    (b"", False, "empty"),
]


@pytest.mark.parametrize("status", [200, 201, 204, 400, 429, 500])
@pytest.mark.parametrize(("body", "hit"), [pytest.param(b, h, id=i) for b, h, i in BRAZE_BODIES])
def test_braze_quick_agrees_with_the_full_path(body: bytes, hit: bool, status: int) -> None:
    full = braze.extract(status, _http._json(body, ""))
    got = braze.quick(status, body)
    assert (got is not None) is hit
    if got is not None:
        assert got == full and got.attrs == full.attrs and got.events == ()  # type: ignore[union-attr]


def test_braze_quick_agrees_on_mutated_bodies() -> None:
    """Seeded byte mutations of success bodies: quick answers some, and never disagrees."""
    rng = random.Random(10)
    seeds = [b for b, hit, _ in BRAZE_BODIES if hit]
    alphabet = b' \t\n\r{}[],:"\\01e.-+aEmrsu\xff\x00'
    answered = 0
    for _ in range(5000):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(body) + 1)
            op = rng.randrange(3)
            if op == 0:
                body[i:i + 1] = b""
            elif op == 1:
                body[i:i] = bytes([rng.choice(alphabet)])
            else:
                body[i:i + 1] = bytes([rng.choice(alphabet)])
        got = braze.quick(201, bytes(body))
        if got is not None:
            answered += 1
            assert got == braze.extract(201, _http._json(bytes(body), "")), bytes(body)
    assert answered > 0


HTTPCORE_URLS = [
    pytest.param("http://127.0.0.1:8080/users/track", ("127.0.0.1", 8080, "/users/track"),
                 id="port"),
    pytest.param("https://REST.iad-01.Braze.com/a/b?x=1&y=2", ("rest.iad-01.braze.com", None,
                                                                "/a/b"), id="case-query"),
    pytest.param("http://[::1]:9000/x?", ("::1", 9000, "/x"), id="ipv6"),
    pytest.param("http://h", ("h", None, "/"), id="no-path"),
]


@pytest.mark.parametrize(("url", "expected"), HTTPCORE_URLS)
def test_httpcore_targets_cache_reads_as_uncached(url: str, expected: tuple[Any, ...]) -> None:
    seen: list[tuple[str, int | None, str]] = []

    def matcher(host: str, port: int | None, path: str) -> None:
        seen.append((host, port, path))

    _http.register(matcher)
    try:
        request = httpcore.Request("POST", url)
        assert _http._prepare(request) is None and _http._prepare(request) is None
    finally:
        _http.unregister(matcher)
    assert seen == [expected, expected]  # the first read and the cached one


def test_httpcore_targets_cache_is_bounded() -> None:
    _http.register(_unclaiming)
    try:
        for i in range(_http._MAX_SPLITS * 2):
            _http._prepare(httpcore.Request("GET", f"http://h/{i}"))
    finally:
        _http.unregister(_unclaiming)
    assert 0 < len(_http._TARGETS) <= _http._MAX_SPLITS


def _unclaiming(host: str, port: int | None, path: str) -> None:
    return None
