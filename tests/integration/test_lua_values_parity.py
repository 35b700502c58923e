"""Lua values as a real Orthanc 1.10.1 gives them to scripts, side by side: JSON numbers are floats,
``print`` joins as Orthanc does, ``PrintRecursive``, and ``Http*`` with nil headers."""
from __future__ import annotations

import pytest

from tests.support.orthanc_peer import ORTHANC_BINARY

pytestmark = pytest.mark.skipif(ORTHANC_BINARY is None, reason="needs Orthanc (apt-get install orthanc)")


SCRIPTS = [
    "print('n=' .. ParseJson('{\"n\":2}').n)",
    "print(math.type(ParseJson('[2.5]')[1]), ParseJson('[4294967296]')[1], ParseJson('[-3]')[1])",
    "local c = GetOrthancConfiguration().Custom print(c.Answer, math.type(c.Answer), c.Ratio, c.List[2])",
    "print('a', 'b', 3)", "print('', 'b')", "print(nil, 'x')", "print('a', '', 'c')", "print('', '', 'x', '', 'y')",
    "print(1, 2.5, true)", "print()",
    "PrintRecursive({a=1})", "PrintRecursive({2, {3, 'x'}})", "PrintRecursive('x')", "PrintRecursive(7)",
    "print(DumpJson(ParseJson('{\"a\":2,\"b\":[1.5,3]}')))",
]


def test_script_values_print_as_in_orthanc(lua_pair) -> None:
    ours, theirs, _ = lua_pair
    for script in SCRIPTS:
        mine, yours = (client.post("/tools/execute-script", content=script.encode()) for client in (ours, theirs))
        assert (mine.status_code, mine.text) == (yours.status_code, yours.text), script


def test_http_calls_with_nil_headers_are_sent_as_in_orthanc(lua_pair) -> None:
    ours, theirs, web = lua_pair
    script = (f"print(HttpGet('{web.url}/get', nil)) print(HttpPost('{web.url}/post', 'x', nil)) "
              f"print(HttpPut('{web.url}/put', nil, nil)) print(HttpDelete('{web.url}/delete', nil))")
    mine, yours = (client.post("/tools/execute-script", content=script.encode()) for client in (ours, theirs))
    assert mine.text == yours.text
    assert web.last("/post").body == b"x"
