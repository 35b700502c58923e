"""The audit log (issue 13, scope 4; ``broker.core.audit``) on a real server: deployments, reloads,
execute-script and every privileged action of a script are recorded with the script's version; the
chain verifies, over REST, on the index and on a JSON-lines export; editing one entry makes the
verification fail at that entry."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.factory import make_instances, to_bytes
from tests.support.postgres import INDEX_VARIABLE
from tests.support.waiting import wait_until

SCRIPT = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  RestApiPut('/instances/' .. instanceId .. '/metadata/Checked', 'yes')
  Delete(instanceId)
end
"""


def actions(server: Any) -> list[dict[str, Any]]:
    answer = server.http.get("/audit")
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def test_deployments_reloads_and_a_scripts_privileged_actions_are_recorded(luabroker: Any) -> None:
    server = luabroker({"audit.lua": SCRIPT}, ExecuteLuaEnabled=True, UserMetadata={"Checked": 1024})
    status = server.http.get("/lua/status").json()
    [deployed] = [entry for entry in actions(server) if entry["Action"] == "scripts.deployed"]
    assert deployed["Version"] == status["Version"] and deployed["Tenant"] == "default"
    assert deployed["Scripts"] == [{"Path": "audit.lua", "SHA256": hashlib.sha256(SCRIPT.encode()).hexdigest()}]

    instance = server.http.post("/instances", content=to_bytes(make_instances(1)[0])).json()["ID"]
    wait_until(lambda: server.http.get(f"/instances/{instance}").status_code == 404,
               message="the Delete job of OnStoredInstance")
    system = f"http://user:secret@127.0.0.1:{server.http.base_url.port}/system"
    script = f"RestApiPost('/tools/find', '{{\"Level\": \"Study\", \"Query\": {{}}}}') HttpGet('{system}')"
    assert server.http.post("/tools/execute-script", content=script).status_code == 200
    (server.root / "audit.lua").write_text(SCRIPT + "\n-- v2\n")
    assert server.http.post("/lua/reload").json()["Changed"] is True

    entries = actions(server)
    by_action = {entry["Action"]: entry for entry in entries}
    put = by_action["script.RestApiPut"]
    assert put["Target"] == f"/instances/{instance}/metadata/Checked" and put["Bytes"] == 3
    assert put["Actor"] == "script:OnStoredInstance" and put["Outcome"] == "ok"
    assert put["Sandbox"] == f"default/main@{status['Version'][:12]}"
    job = by_action["script.job"]
    assert job["Operations"] == [{"Operation": "delete", "Resource": instance, "Target": None}]
    executed = by_action["scripts.executed"]
    assert executed["SHA256"] == hashlib.sha256(script.encode()).hexdigest()
    assert by_action["script.RestApiPost"]["Actor"] == "script:execute-script"
    http_get = by_action["script.HttpGet"]
    assert http_get["Target"] == system.replace("secret", "<redacted>") and http_get["Outcome"] == "ok"
    reloaded = by_action["scripts.reloaded"]
    assert reloaded["Previous"] == status["Version"] and reloaded["Version"] != status["Version"]
    assert [entry["Seq"] for entry in entries] == list(range(1, len(entries) + 1))
    assert server.http.get("/audit?since=2&limit=1").json() == [entries[2]]


@pytest.mark.skipif(os.environ.get(INDEX_VARIABLE) == "postgresql", reason="edits the rows of index.sqlite")
def test_the_chain_verifies_and_an_edited_entry_is_named(luabroker: Any, tmp_path: Path) -> None:
    server = luabroker({"audit.lua": SCRIPT}, ExecuteLuaEnabled=True)
    for number in range(4):
        assert server.http.post("/tools/execute-script", content=f"x = {number}").status_code == 200
    verified = server.http.get("/audit/verify").json()
    assert verified["Valid"] is True and verified["Entries"] == len(actions(server)) == 5
    verify = [sys.executable, "-m", "broker.core.audit"]

    # An export verifies; editing one line of it fails at that line.
    export = tmp_path / "audit.jsonl"
    export.write_bytes(server.http.get("/audit/export").content)
    assert subprocess.run([*verify, str(export)], capture_output=True).returncode == 0
    lines = export.read_text().splitlines(keepends=True)
    edited = json.loads(lines[2])
    edited["SHA256"] = "0" * 64
    lines[2] = json.dumps(edited) + "\n"
    export.write_text("".join(lines))
    run = subprocess.run([*verify, str(export)], capture_output=True, text=True)
    assert run.returncode == 1 and "entry at line 3 " in run.stdout, run.stdout

    # Editing one entry in the index: REST and the command name it.
    index = server.root / "storage" / "index.sqlite"
    with sqlite3.connect(index) as connection:
        connection.execute("UPDATE audit SET entry = replace(entry, 'x = 1', 'x = 9') WHERE seq = 4")
        text = connection.execute("SELECT entry FROM audit WHERE seq = 4").fetchone()[0]
        connection.execute("UPDATE audit SET entry = ? WHERE seq = 4",
                           (text.replace('"Bytes":5', '"Bytes":6'),))
    verified = server.http.get("/audit/verify").json()
    assert (verified["Valid"], verified["FirstTampered"], verified["Entries"]) == (False, 4, 3)
    run = subprocess.run([*verify, str(index)], capture_output=True, text=True)
    assert run.returncode == 1 and "entry at Seq 4 " in run.stdout, run.stdout
