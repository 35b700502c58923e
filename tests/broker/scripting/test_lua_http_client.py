"""The Lua ``Http*`` built-ins through the real server (``/tools/execute-script``) against a local web
service: Orthanc's return conventions, persistent credentials and timeout, per-call headers, and
``LuaHttpAllowedHosts``."""
from __future__ import annotations

import time

import pytest

from tests.support.ports import free_port


@pytest.fixture
def lua(luabroker, web_service):
    """Runs Lua in the main sandbox of a server, with ``URL`` set to the web service; the printed text."""
    server = luabroker(ExecuteLuaEnabled=True)
    server.execute(f"URL = '{web_service.url}'")

    def run(source: str) -> str:
        answer = server.execute(source)
        assert answer.status_code == 200, answer.text
        return answer.text

    run.server = server
    return run


def test_get_answers_the_body_and_is_binary_safe(lua, web_service):
    assert lua("print(HttpGet(URL .. '/echo'))") == "ok GET\n"
    assert lua("local b = HttpGet(URL .. '/binary') print(#b, b:byte(1), b:byte(256))") == "256, 0, 255\n"
    assert web_service.last("/echo").method == "GET"


def test_credentials_persist_across_calls_of_the_process(lua, web_service):
    lua("SetHttpCredentials('alice', 'wonder:land')")
    lua("HttpGet(URL .. '/first')")
    lua("HttpPost(URL .. '/second', 'x')")
    assert web_service.last("/first").basic_auth == ("alice", "wonder:land")
    assert web_service.last("/second").basic_auth == ("alice", "wonder:land")


def test_headers_keep_their_case_and_do_not_persist(lua, web_service):
    lua("HttpGet(URL .. '/with', {['X-Custom-Header'] = 'Abc', ['x-lower'] = 42})")
    lua("HttpGet(URL .. '/without')")
    lua("HttpGet(URL .. '/empty', {})")
    with_headers = web_service.last("/with")
    assert ("X-Custom-Header", "Abc") in with_headers.headers and ("x-lower", "42") in with_headers.headers
    assert web_service.last("/without").header("X-Custom-Header") is None
    assert web_service.last("/empty").method == "GET"


def test_post_and_put_bodies(lua, web_service):
    assert lua("print(HttpPost(URL .. '/nil', nil))") == "ok POST\n"
    lua("HttpPost(URL .. '/json', '{\"a\":1}', {['Content-Type'] = 'application/json'})")
    lua("HttpPut(URL .. '/put', 'data')")
    lua("HttpPost(URL .. '/binary-body', string.char(0, 1, 255))")
    assert web_service.last("/nil").body == b"" and web_service.last("/nil").header("Content-Length") == "0"
    assert web_service.last("/json").body == b'{"a":1}'
    assert web_service.last("/json").header("Content-Type") == "application/json"
    assert web_service.last("/put").method == "PUT" and web_service.last("/put").body == b"data"
    assert web_service.last("/binary-body").body == b"\x00\x01\xff"


def test_a_non_2xx_status_is_an_empty_string(lua):
    assert lua("local r = HttpGet(URL .. '/status/404') print(r == '', type(r))") == "true, string\n"
    assert lua("print(HttpPost(URL .. '/status/500', 'x') == '')") == "true\n"
    assert lua("print(HttpPut(URL .. '/status/302') == '')") == "true\n"  # a redirect with no Location


def test_redirects_are_followed(lua, web_service):
    assert lua(f"print(HttpGet(URL .. '/redirect?to={web_service.url}/target'))") == "ok GET\n"
    assert web_service.last("/target").method == "GET"


def test_transport_errors_and_bad_parameters_are_nil(lua):
    closed = f"http://127.0.0.1:{free_port()}/x"
    assert lua(f"print(HttpGet('{closed}'), HttpPost('{closed}', 'x'), HttpPut('{closed}'))") == "nil, nil, nil\n"
    assert lua("print(HttpGet('ftp://127.0.0.1/x'), HttpGet('not a url'))") == "nil, nil\n"
    assert lua("print(HttpGet(), HttpGet(URL, 'x'), HttpPost(URL, {}))") == "nil, nil, nil\n"


def test_set_http_timeout_bounds_the_request(lua):
    lua("SetHttpTimeout(1.9)")  # truncated to 1
    started = time.monotonic()
    assert lua("print(HttpGet(URL .. '/slow'))") == "nil\n"
    assert time.monotonic() - started < 1.9
    lua("SetHttpTimeout(0)")  # <= 0 means 60 s
    assert lua("print(HttpGet(URL .. '/slow'))") == "ok GET\n"


def test_delete_answers_success_or_nil_and_raises_without_an_answer(lua):
    assert lua("print(HttpDelete(URL .. '/item'))") == "SUCCESS\n"
    assert lua("print(HttpDelete(URL .. '/status/404'))") == "nil\n"
    assert lua("print(HttpDelete(URL, 'not a table'))") == "nil\n"
    failed = lua.server.execute(f"HttpDelete('http://127.0.0.1:{free_port()}/item')")
    assert failed.status_code == 500 and "HttpDelete" in failed.json()["Details"]
    assert lua("print(pcall(HttpDelete, 'http://127.0.0.1:1/x'))").startswith("false, ")


def test_set_http_credentials_and_timeout_ignore_bad_arguments(lua, web_service):
    lua("SetHttpCredentials('only-one') SetHttpTimeout('soon')")
    lua("HttpGet(URL .. '/anonymous')")
    assert web_service.last("/anonymous").basic_auth is None


def test_allowed_hosts_refuse_other_hosts_and_redirects_to_them(luabroker, web_service):
    server = luabroker(ExecuteLuaEnabled=True, LuaHttpAllowedHosts=["localhost"])
    allowed, refused = f"http://localhost:{web_service.port}", web_service.url
    printed = server.execute(f"print(HttpGet('{allowed}/fine'), HttpGet('{refused}/refused'),"
                             f" HttpGet('{allowed}/redirect?to={refused}/sneaky'), HttpDelete('{refused}/x'))").text
    assert printed == "ok GET, nil, nil, nil\n"
    assert [r.path.split("?")[0] for r in web_service.requests] == ["/fine", "/redirect"]


def test_seed_example_posts_the_preview_of_a_stored_instance_with_a_content_type(luabroker, web_service):
    """The seed's example: ``HttpPost`` of ``RestApiGet('/instances/<id>/preview')`` with a
    ``content-type`` header, from ``OnStoredInstance``."""
    from io import BytesIO

    from PIL import Image

    from tests.support.factory import make_instances, to_bytes

    server = luabroker({"preview.lua": f"""
        function OnStoredInstance(instanceId, tags, metadata)
          local preview = RestApiGet('/instances/' .. instanceId .. '/preview')
          local headers = {{
            ["content-type"] = "image/png",
          }}
          HttpPost("{web_service.url}/my-web-service/instance-preview", preview, headers)
        end"""})
    instance = make_instances(1)[0]
    server.http.post("/instances", content=to_bytes(instance))
    server.wait_events()

    seen = web_service.last("/my-web-service/instance-preview")
    assert seen.method == "POST" and seen.header("content-type") == "image/png"
    image = Image.open(BytesIO(seen.body))
    assert image.format == "PNG" and image.size == (instance.Columns, instance.Rows)
