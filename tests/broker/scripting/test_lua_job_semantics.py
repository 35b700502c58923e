"""Orthanc's deferred "Lua job" semantics (spec sections 3 and 4), through the real server: what the
helpers record and return, one job per burst of callbacks, the wiring rule, discarding on error,
execute-script, submission errors, and OnJob* callbacks."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.jobs import JobState
from tests.support.factory import make_instances, to_bytes
from tests.support.receivers import StoreScpProcess
from tests.support.waiting import wait_until

JOBS = {"LuaTrailingTimeout": 0.3, "RetryAttempts": 2, "RetryDelay": 0.1}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[StoreScpProcess]:
    scp = StoreScpProcess(tmp_path / "received", "+xa")
    yield scp
    scp.stop()


def upload(server: Any, count: int = 1, **options: Any) -> list[str]:
    return [server.http.post("/instances", content=to_bytes(ds)).json()["ID"]
            for ds in make_instances(count, **options)]


def printed(server: Any, source: str) -> str:
    answer = server.execute(source)
    assert answer.status_code == 200, answer.text
    return answer.text


def lua_job(server: Any) -> Any:
    """The current "Lua" job object and its id."""
    lua_jobs = server.server.services.lua_jobs
    assert lua_jobs.current_id is not None, "no Lua job was submitted"
    return lua_jobs.current_id, lua_jobs._current


# What the helpers record and return (Toolbox.lua).
def test_helpers_record_orthancs_operations_innermost_first(luabroker: Any) -> None:
    server = luabroker(ExecuteLuaEnabled=True)
    answer = printed(server, """
        _InitializeJob()
        local replace = {StationName = 'My Medical Device'}
        Delete(SendToModality(ModifyInstance('abc', replace, {'MilitaryRank'}, true), 'sample'))
        print(DumpJson(_AccessJob()))
    """)
    assert json.loads(answer) == [
        {"Operation": "modify", "Resource": "abc", "Replace": {"StationName": "My Medical Device"},
         "Remove": ["MilitaryRank"], "RemovePrivateTags": True},
        {"Operation": "store-scu", "Resource": "", "Modality": "sample"},
        {"Operation": "delete", "Resource": ""},
    ]


def test_helpers_return_id_empty_string_or_nil(luabroker: Any) -> None:
    server = luabroker(ExecuteLuaEnabled=True)
    answer = printed(server, """
        _InitializeJob()
        print(SendToModality('i1', 'sample', 'HELLO'), SendToPeer('i2', 'peer'), CallSystem('i3', 'ls', {}),
              '[' .. ModifyInstance('i4', nil, nil, false) .. ']', ModifyResource('i5') == '', Delete('i6') == nil,
              select('#', Delete('i7')))
        print(DumpJson(_AccessJob()[1]))
    """)
    lines = answer.splitlines()
    assert lines[0] == "i1, i2, i3, [], true, true, 1"
    assert json.loads(lines[1]) == {"Operation": "store-scu", "Resource": "i1", "Modality": "sample",
                                    "LocalAet": "HELLO"}


@pytest.mark.parametrize("call, message", [
    ("SendToModality(nil, 'sample')", "Cannot send a nonexistent resource"),
    ("SendToPeer(nil, 'peer')", "Cannot send a nonexistent resource"),
    ("Delete(nil)", "Cannot delete a nonexistent resource"),
    ("ModifyInstance(nil, {}, {}, true)", "Cannot modify a nonexistent resource"),
    ("ModifyInstance('', {}, {}, true)", "Cannot modify twice an resource"),
    ("CallSystem(nil, 'ls', {})", "Cannot execute a system call on a nonexistent resource"),
    ("CallSystem('i', nil, {})", "No command was specified for system call"),
])
def test_helpers_raise_orthancs_errors(luabroker: Any, call: str, message: str) -> None:
    server = luabroker(ExecuteLuaEnabled=True)
    answer = server.execute(f"_InitializeJob()\n{call}")
    assert answer.status_code == 500
    details = answer.json()["Details"]
    assert details.endswith(message) and details.startswith('[string "line"]:2:')


# One job per burst of callbacks, wired by Orthanc's rule.
def test_callback_operations_become_one_lua_job_wired_as_orthanc(luabroker: Any, receiver: StoreScpProcess) -> None:
    script = """
    function OnStoredInstance(instanceId, tags, metadata, origin)
      SendToModality(instanceId, 'sample')      -- Resource non-empty: its own input
      CallSystem(instanceId, 'true', {'00123', 4.5, 7})
    end
    """
    server = luabroker({"route.lua": script}, DicomModalities={"sample": receiver.modality()},
                       Jobs={**JOBS, "LuaTrailingTimeout": 3})
    first, second = upload(server, 2)
    wait_until(lambda: len(receiver.files()) == 2, message="two instances at the receiver")
    job_id, job = lua_job(server)
    assert server.server.services.jobs.ids() == [job_id]   # both callbacks fed the same job
    operations = job.operations()
    assert [(op["Operation"]["Type"], op["OriginalInputs"], op["Next"]) for op in operations] == [
        ("store-scu", [first], []), ("call-system", [first], []),
        ("store-scu", [second], []), ("call-system", [second], []),
    ]
    # keepStrings=false: the numeric string '00123' arrives as the number 123 (spec 1b)
    assert operations[1]["Operation"]["Arguments"] == ["123", "4.5", "7"]
    info = server.http.get(f"/jobs/{job_id}").json()
    assert (info["Type"], info["Priority"], info["Content"]) == ("SequenceOfOperations", 0,
                                                                {"CountOperations": 4, "Description": "Lua"})


def test_empty_resource_takes_the_outputs_of_the_previous_operation(luabroker: Any, receiver: StoreScpProcess) -> None:
    script = """
    function OnStoredInstance(instanceId)
      SendToModality('', 'sample')               -- first operation with '': no input, does nothing
      Delete(SendToModality(instanceId, 'sample'))
      Delete(SendToPeer(SendToModality(instanceId, 'sample'), 'nowhere'))
    end
    """
    server = luabroker({"route.lua": script}, DicomModalities={"sample": receiver.modality()}, Jobs=JOBS)
    [instance] = upload(server)
    server.wait_events()
    job_id, job = lua_job(server)
    # the unknown peer is a submission error: the operations before it are kept, it is dropped
    assert [(op["Operation"]["Type"], op["OriginalInputs"], op["Next"]) for op in job.operations()] == [
        ("store-scu", [], []), ("store-scu", [instance], []), ("delete", [instance], []),
        ("store-scu", [instance], []),
    ]
    server.server.services.jobs.wait(job_id, timeout=20)
    # strictly in sequence: sent by operation 2, deleted by 3; operation 4 cannot read it any more
    # (logged, passed on, as in Orthanc) and the job still succeeds
    assert len(receiver.files()) == 1
    assert server.http.get("/instances").json() == []
    assert server.server.services.jobs.state(job_id) is JobState.SUCCESS


def test_operations_are_discarded_when_the_callback_raises(luabroker: Any, receiver: StoreScpProcess,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    script = """
    function OnStoredInstance(instanceId)
      Delete(SendToModality(instanceId, 'sample'))
      error('changed my mind')
    end
    """
    server = luabroker({"route.lua": script}, DicomModalities={"sample": receiver.modality()}, Jobs=JOBS)
    with caplog.at_level(logging.ERROR):
        [instance] = upload(server)
        server.wait_events()
    assert "changed my mind" in caplog.text
    assert server.server.services.jobs.ids() == []
    assert server.http.get("/instances").json() == [instance]
    assert receiver.files() == []


def test_helpers_called_from_execute_script_do_nothing(luabroker: Any, receiver: StoreScpProcess) -> None:
    server = luabroker({"noop.lua": "function OnStoredInstance(instanceId) end"}, ExecuteLuaEnabled=True,
                       DicomModalities={"sample": receiver.modality()}, Jobs=JOBS)
    # before any callback, _job is nil: table.insert raises, as in Orthanc
    failed = server.execute("SendToModality('x', 'sample')")
    assert failed.status_code == 500 and "table expected, got nil" in failed.json()["Details"]
    [instance] = upload(server)
    server.wait_events()
    # after a callback, the operation goes into a stale table that nobody submits
    assert printed(server, f"Delete(SendToModality('{instance}', 'sample'))") == ""
    server.wait_events()
    assert server.server.services.jobs.ids() == []
    assert server.http.get("/instances").json() == [instance] and receiver.files() == []


def test_unknown_modality_is_a_submission_error_and_earlier_operations_are_kept(
        luabroker: Any, receiver: StoreScpProcess, caplog: pytest.LogCaptureFixture) -> None:
    script = """
    function OnStoredInstance(instanceId)
      SendToModality(instanceId, 'sample')
      SendToModality(instanceId, 'unknown')
      Delete(instanceId)
    end
    """
    server = luabroker({"route.lua": script}, DicomModalities={"sample": receiver.modality()}, Jobs=JOBS)
    with caplog.at_level(logging.ERROR):
        [instance] = upload(server)
        server.wait_events()
    assert "Error while processing Lua events" in caplog.text
    assert "No modality with symbolic name: unknown" in caplog.text
    job_id, job = lua_job(server)
    assert [op["Operation"]["Type"] for op in job.operations()] == ["store-scu"]
    server.server.services.jobs.wait(job_id, timeout=20)
    assert len(receiver.files()) == 1
    assert server.http.get("/instances").json() == [instance]   # the Delete was dropped


def test_on_job_callbacks_get_the_job_id(luabroker: Any, receiver: StoreScpProcess) -> None:
    script = """
    events = {}
    function OnStoredInstance(instanceId) SendToModality(instanceId, 'sample') end
    function OnJobSubmitted(jobId) table.insert(events, 'submitted ' .. jobId) end
    function OnJobSuccess(jobId) table.insert(events, 'success ' .. jobId) end
    function OnJobFailure(jobId) table.insert(events, 'failure ' .. jobId) end
    """
    server = luabroker({"route.lua": script}, ExecuteLuaEnabled=True,
                       DicomModalities={"sample": receiver.modality()}, Jobs=JOBS)
    upload(server)
    server.wait_events()
    job_id, _ = lua_job(server)
    server.server.services.jobs.wait(job_id, timeout=20)
    rest = server.http.post("/modalities/sample/store", json={"Resources": [], "Synchronous": False}).json()
    server.server.services.jobs.wait(rest["ID"], timeout=20)
    wait_until(lambda: printed(server, "print(#events)").strip() == "4", message="four job events")
    assert printed(server, "for _, e in ipairs(events) do print(e) end").splitlines() == [
        f"submitted {job_id}", f"success {job_id}", f"submitted {rest['ID']}", f"success {rest['ID']}"]


def test_a_later_callback_after_the_job_finished_starts_a_new_job(luabroker: Any, receiver: StoreScpProcess) -> None:
    script = "function OnStoredInstance(instanceId) SendToModality(instanceId, 'sample') end"
    server = luabroker({"route.lua": script}, DicomModalities={"sample": receiver.modality()},
                       Jobs={**JOBS, "LuaTrailingTimeout": 0.1})
    upload(server)
    server.wait_events()
    first, _ = lua_job(server)
    server.server.services.jobs.wait(first, timeout=20)
    upload(server)
    server.wait_events()
    second, _ = lua_job(server)
    server.server.services.jobs.wait(second, timeout=20)
    assert first != second and server.server.services.jobs.state(first) is JobState.SUCCESS
    assert len(receiver.files()) == 2




def test_a_bad_modification_is_a_submission_error(luabroker: Any, receiver: StoreScpProcess,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    # Replace={} crosses as [] (keepStrings=false conversion of an empty table), which Orthanc refuses
    script = """
    function OnStoredInstance(instanceId, tags, metadata)
      if metadata['ModifiedFrom'] == nil then
        SendToModality(instanceId, 'sample')
        Delete(SendToModality(ModifyInstance(instanceId, {}, nil, true), 'sample'))
      end
    end
    """
    server = luabroker({"route.lua": script}, DicomModalities={"sample": receiver.modality()}, Jobs=JOBS)
    with caplog.at_level(logging.ERROR):
        [instance] = upload(server)
        server.wait_events()
    assert "Error while processing Lua events" in caplog.text
    job_id, job = lua_job(server)
    assert [op["Operation"]["Type"] for op in job.operations()] == ["store-scu"]
    server.server.services.jobs.wait(job_id, timeout=20)
    assert len(receiver.files()) == 1 and server.http.get("/instances").json() == [instance]


def test_modified_copy_is_stored_with_origin_lua_and_modified_from(luabroker: Any) -> None:
    script = """
    seen = {}
    function OnStoredInstance(instanceId, tags, metadata, origin)
      table.insert(seen, {id = instanceId, origin = origin.RequestOrigin, from = metadata['ModifiedFrom'],
                          station = tags['StationName']})
      if metadata['ModifiedFrom'] == nil then
        ModifyInstance(instanceId, {StationName = 'My Medical Device'}, nil, false)
      end
    end
    """
    server = luabroker({"modify.lua": script}, ExecuteLuaEnabled=True, Jobs=JOBS)
    [instance] = upload(server)
    wait_until(lambda: printed(server, "print(#seen)").strip() == "2", message="OnStoredInstance of the copy")
    seen = json.loads(printed(server, "print(DumpJson(seen))"))
    copy = seen[1]
    assert seen[0]["id"] == instance and seen[0]["origin"] == "RestApi"
    assert (copy["origin"], copy["from"], copy["station"]) == ("Lua", instance, "My Medical Device")
    assert sorted(server.http.get("/instances").json()) == sorted([instance, copy["id"]])
    assert server.http.get(f"/instances/{copy['id']}/metadata/ModifiedFrom").text == instance


@pytest.mark.parametrize("enabled, command, deleted", [
    (False, "true", False),   # untrusted: refused at run time, no output, the chained Delete('') does nothing
    (True, "test", True),     # `test -s <file>`: the temporary copy of the instance is not empty
    (True, "false", False),   # the command failed: no output
])
def test_call_system_runs_only_in_trusted_mode(luabroker: Any, caplog: pytest.LogCaptureFixture,
                                               enabled: bool, command: str, deleted: bool) -> None:
    script = f"""
    function OnStoredInstance(instanceId)
      CallSystem(instanceId, '{command}', {{'-s'}})
      Delete('')
    end
    """
    server = luabroker({"call.lua": script}, Jobs={**JOBS, "CallSystemEnabled": enabled})
    with caplog.at_level(logging.ERROR):
        [instance] = upload(server)
        server.wait_events()
        job_id, _ = lua_job(server)
        server.server.services.jobs.wait(job_id, timeout=20)
    assert server.http.get("/instances").json() == ([] if deleted else [instance])
    if not enabled:
        assert "only in trusted mode" in caplog.text
