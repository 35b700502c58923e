"""``POST /tools/shutdown`` and ``POST /tools/reset`` on a real ``luabroker`` process (``python -m
broker.cli``): the answer is Orthanc's ``{}``; a shutdown is the clean stop of SIGTERM (exit status 0,
ports closed, nothing lost); a reset stops the same way and starts again in the same process with the
configuration file and the scripts read anew. A Lua script may ask for either through ``RestApiPost``."""
from __future__ import annotations

import socket

import httpx
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from broker.dicom.sockets import NODELAY_HANDLERS, pause_reactor
from broker.scripting.version import sources_digest
from sandbox import ScriptSource
from tests.support.factory import make_instances, to_bytes
from tests.support.ports import free_port
from tests.support.process import START_S, LuabrokerProcess, write_config
from tests.support.waiting import wait_until


def upload(process: LuabrokerProcess, count: int) -> list[str]:
    ids = []
    for ds in make_instances(count):
        answer = process.http.post("/instances", content=to_bytes(ds))
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["ID"])
    return sorted(ids)


def is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def c_echo(port: int) -> int:
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="LUABROKER", evt_handlers=NODELAY_HANDLERS)
    if not assoc.is_established:
        return -1
    try:
        pause_reactor(assoc)
        return assoc.send_c_echo().Status
    finally:
        assoc.release()


def assert_orthanc_answer(answer: httpx.Response) -> None:
    """Orthanc 1.10.1 answers the two bytes ``{}`` as JSON (``AnswerBuffer("{}", MimeType_Json)``)."""
    assert answer.status_code == 200, answer.text
    assert answer.content == b"{}"
    assert answer.headers["content-type"] == "application/json"


def clean_stops(server: LuabrokerProcess) -> int:
    """How many times the server (its worker, with PostgreSQL) said it had stopped cleanly; a supervisor
    says so too, of itself."""
    return server.lines("luabroker has stopped") - server.lines("luabroker has stopped (supervisor)")


def test_shutdown_answers_then_exits_0_and_a_new_server_finds_the_instances(tmp_path, processes) -> None:
    config = write_config(tmp_path)
    first = processes(tmp_path)
    first.wait_ready()
    stored = upload(first, 3)

    assert_orthanc_answer(first.http.post("/tools/shutdown"))

    assert first.wait_exit() == 0, "".join(first.output)
    assert not is_listening(config["HttpPort"]) and not is_listening(config["DicomPort"])
    assert first.lines("Shutdown request received") == 1
    assert clean_stops(first) == 1, "".join(first.output)  # the clean stop, as SIGTERM
    assert first.lines("restarting") == 0

    second = processes(tmp_path)  # the same configuration, so the same storage
    second.wait_ready()
    assert sorted(second.get("/instances")) == stored
    assert c_echo(config["DicomPort"]) == 0


def test_reset_reads_the_configuration_and_the_scripts_again_and_keeps_the_instances(tmp_path, processes) -> None:
    (tmp_path / "hello.lua").write_text("function Initialize() print('hello one') end\n")
    config = write_config(tmp_path, LuaScripts=["hello.lua"])
    server = processes(tmp_path)
    server.wait_ready()
    stored = upload(server, 2)
    pid = server.process.pid
    assert server.get("/system")["Name"] == "first" and server.get("/modalities") == []

    # Edit what a reset must read again: the configuration file, and the scripts it names.
    (tmp_path / "hello.lua").write_text("function Initialize() print('hello two') end\n")
    write_config(tmp_path, **{**config, "Name": "second", "LuaScripts": ["hello.lua"],
                              "DicomModalities": {"peer": ["PEER", "127.0.0.1", free_port()]}})
    assert_orthanc_answer(server.http.post("/tools/reset"))

    server.wait_ready(2)
    wait_until(lambda: (server.get("/system") or {}).get("Name") == "second", START_S, message="the new Name")
    assert server.process.poll() is None and server.process.pid == pid  # restarted inside the same process
    assert server.get("/modalities") == ["peer"]
    assert sorted(server.get("/instances")) == stored
    assert server.get("/lua/status")["Version"] == sources_digest(
        [ScriptSource("hello.lua", (tmp_path / "hello.lua").read_bytes())])
    assert server.lines("Lua says: hello one") == 1 and server.lines("Lua says: hello two") == 1
    assert clean_stops(server) == 1  # the old server stopped cleanly before the new one
    assert upload(server, 1)[0] not in stored  # both front ends serve again
    assert c_echo(config["DicomPort"]) == 0

    assert_orthanc_answer(server.http.post("/tools/shutdown"))
    assert server.wait_exit() == 0, "".join(server.output)


def test_lua_can_reset_and_shut_down_the_server_with_rest_api_post(tmp_path, processes) -> None:
    """The restart and the stop happen after the script's call has returned, outside the sandbox call:
    no deadlock, whether the call comes from execute-script (an HTTP request in progress) or from
    ``OnStoredInstance`` (the event dispatcher, which the stop waits for)."""
    (tmp_path / "stop.lua").write_text(
        "function Initialize() print('started') end\n"
        "function OnStoredInstance(id)\n"
        "  print('stopping after ' .. id .. ': ' .. RestApiPost('/tools/shutdown', ''))\n"
        "end\n")
    write_config(tmp_path, LuaScripts=["stop.lua"], ExecuteLuaEnabled=True)
    server = processes(tmp_path)
    server.wait_ready()

    answer = server.http.post("/tools/execute-script", content=b"print(RestApiPost('/tools/reset', ''))")
    assert answer.status_code == 200 and answer.text == "{}\n"
    server.wait_ready(2)
    assert server.lines("Lua says: started") == 2

    stored = upload(server, 1)  # its OnStoredInstance asks for the shutdown
    assert server.wait_exit() == 0, "".join(server.output)
    assert server.lines(f"Lua says: stopping after {stored[0]}: {{}}") == 1

    again = processes(tmp_path)
    again.wait_ready()
    assert again.get("/instances") == stored
    assert again.get("/lua/status")["Events"] == {"pending": 0, "done": 1, "parked": 0}  # delivered once


def test_an_embedded_server_stops_on_both_and_says_which(luabroker) -> None:
    """``Server.run()`` (here in a thread, as the tests and benchmarks run it) stops on either call and
    returns whether it was a reset: starting again is its owner's part (``broker.cli`` re-executes)."""
    shut, reset = luabroker(), luabroker()
    assert {"reset", "shutdown"} <= set(shut.http.get("/tools").json())
    for path in ("/tools/reset", "/tools/shutdown"):
        wrong = shut.http.get(path)  # as Orthanc: 405, POST only
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"

    assert_orthanc_answer(shut.http.post("/tools/shutdown"))
    assert_orthanc_answer(reset.http.post("/tools/reset"))
    for running in (shut, reset):
        running.thread.join(START_S)
        assert not running.thread.is_alive()
    assert (shut.server.reset_requested, reset.server.reset_requested) == (False, True)
