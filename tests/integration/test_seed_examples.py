"""The seed's examples (``shared/seed/lua.rst``), run against a real server with real sandboxes."""
from __future__ import annotations

import json

from tests.broker.dicom.test_find_scp import findscu, needs_dcmtk
from tests.support.factory import make_instances, to_bytes
from tests.support.worklist_samples import two_stations

MR_ONLY = """
function ReceivedInstanceFilter(dicom, origin, info)
  -- Only allow incoming MR images
  if dicom.Modality == 'MR' then
    return true
  else
    return false
  end
end
"""

ADMIN_ONLY = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  -- Only allow GET requests for non-admin users
  if method == 'GET' then
    return true
  elseif username == 'admin' then
    return true
  else
    return false
  end
end
"""

REST_CALLBACK = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  local simplified = ParseJson(RestApiGet('/instances/' .. instanceId .. '/simplified-tags'))
  RestApiPut('/instances/' .. instanceId .. '/metadata/Seen',
             simplified['PatientName'] .. '|' .. origin['RequestOrigin'] .. '|' .. metadata['Origin']
             .. '|' .. tags['Modality'])
end
"""

#: "Fixing C-Find requests": the worklist filter that implements FilterIssuerAet, as the seed writes it.
WORKLIST_ISSUER_AET = """
function IncomingWorklistRequestFilter(query, origin)
PrintRecursive(query)
PrintRecursive(origin)

-- Implements the same behavior as the "FilterIssuerAet"
-- option of the sample worklist plugin
query['0040,0100'][1]['0040,0001'] = origin['RemoteAet']

return query
end
"""


def test_mr_only_filter_over_rest(luabroker):
    server = luabroker({"filter.lua": MR_ONLY})
    ct = make_instances(1, modality="CT")[0]
    mr = make_instances(1, modality="MR", base="MR_small.dcm")[0]

    refused = server.http.post("/instances", content=to_bytes(ct))
    accepted = server.http.post("/instances", content=to_bytes(mr))

    assert refused.status_code == 200 and refused.json()["Status"] == "FilteredOut"
    assert accepted.status_code == 200 and accepted.json()["Status"] == "Success"
    assert server.http.get("/instances").json() == [accepted.json()["ID"]]


def test_mr_only_filter_over_c_store(luabroker):
    server = luabroker({"filter.lua": MR_ONLY})
    ct = make_instances(2, modality="CT")
    mr = make_instances(1, modality="MR", base="MR_small.dcm")

    statuses = server.c_store(ct + mr)

    assert statuses == [0x0000, 0x0000, 0x0000]  # Orthanc answers Success for a filtered-out instance
    stored = server.http.get("/instances", params={"expand": ""}).json()
    assert [i["MainDicomTags"]["SOPInstanceUID"] for i in stored] == [mr[0].SOPInstanceUID]


def test_admin_only_http_filter_with_basic_auth(luabroker):
    server = luabroker({"acl.lua": ADMIN_ONLY}, AuthenticationEnabled=True,
                       RegisteredUsers={"admin": "secret", "bob": "hunter2"})
    instance = to_bytes(make_instances(1)[0])
    with server.client(("admin", "secret")) as admin, server.client(("bob", "hunter2")) as bob, \
            server.client(("bob", "wrong")) as impostor:
        assert server.http.get("/system").status_code == 401
        assert impostor.get("/system").status_code == 401
        assert bob.get("/system").status_code == 200
        refused = bob.post("/instances", content=instance)
        assert refused.status_code == 403 and refused.content == b""
        assert admin.post("/instances", content=instance).json()["Status"] == "Success"
        assert len(bob.get("/instances").json()) == 1


def test_http_filter_sees_method_uri_ip_user_and_lowercased_headers(luabroker):
    server = luabroker(ExecuteLuaEnabled=True)
    server.execute("""
      seen = {}
      function IncomingHttpRequestFilter(method, uri, ip, username, headers)
        if uri == '/patients' then
          seen = {method, uri, ip, username, headers['x-custom']}
        end
        return headers['x-deny'] == nil
      end""")
    assert server.http.get("/patients", params={"expand": ""}, headers={"X-Custom": "Abc"}).status_code == 200
    assert server.http.get("/patients", headers={"X-Deny": "1"}).status_code == 403
    printed = server.execute("print(seen[1], seen[2], seen[3], seen[4] == '', seen[5])").text
    assert printed == "GET, /patients, 127.0.0.1, true, nil\n"  # the second request overwrote seen
    assert server.execute("function IncomingHttpRequestFilter() return 'yes' end").status_code == 200
    broken = server.http.get("/system")
    assert broken.status_code == 500 and broken.json()["OrthancStatus"] == 2034


def test_print_42_through_execute_script(luabroker):
    server = luabroker(ExecuteLuaEnabled=True)
    answer = server.execute("print(42)")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert json.loads(answer.text) == 42
    assert server.execute('print("a", nil, 1.5) print()').text == "a, nil, 1.5\n\n"


def test_execute_script_is_forbidden_unless_enabled(luabroker):
    server = luabroker()
    answer = server.execute("print(42)")
    assert answer.status_code == 403 and answer.content == b""


def test_execute_script_error_answers_orthanc_error_json(luabroker):
    server = luabroker(ExecuteLuaEnabled=True)
    answer = server.execute('error("boom")')
    assert answer.status_code == 500
    assert answer.json() == {
        "Details": '[string "line"]:1: boom', "HttpError": "Internal Server Error", "HttpStatus": 500,
        "Message": "Cannot execute a Lua command", "Method": "POST",
        "OrthancError": "Cannot execute a Lua command", "OrthancStatus": 2031, "Uri": "/tools/execute-script"}


def test_globals_set_by_execute_script_persist(luabroker):
    server = luabroker(ExecuteLuaEnabled=True)
    server.execute('aet = "HELLO"')
    assert server.execute("print(aet)").text == "HELLO\n"


def test_on_stored_instance_calls_rest_api_get_and_put(luabroker):
    server = luabroker({"callback.lua": REST_CALLBACK}, UserMetadata={"Seen": 1024})
    instance_id = server.http.post("/instances", content=to_bytes(make_instances(1)[0])).json()["ID"]
    server.wait_events()
    seen = server.http.get(f"/instances/{instance_id}/metadata/Seen")
    assert seen.status_code == 200
    assert seen.text == "DOE^JOHN|RestApi|RestApi|CT"


def test_rest_api_from_lua_bypasses_http_filter_and_returns_nil_on_errors(luabroker):
    server = luabroker(ExecuteLuaEnabled=True)
    printed = server.execute("""
      function IncomingHttpRequestFilter() return false end
      print(type(RestApiGet('/system')))
      print(RestApiGet('/nothing'))
      print(RestApiGet('/system', nil, {}))
      print(RestApiDelete('/instances/nope'))
    """).text
    assert printed == "string\nnil\nnil\nnil\n"
    assert server.http.get("/system").status_code == 403


def test_get_orthanc_configuration_returns_the_file_as_written(luabroker):
    server = luabroker(ExecuteLuaEnabled=True, Custom={"Answer": 42, "Nothing": None, "List": [1, "two"]})
    printed = server.execute("""
      local c = GetOrthancConfiguration()
      print(c.Name, c.Custom.Answer, c.Custom.Nothing, c.Custom.List[2], c.StableAge)
    """).text
    assert printed == "test, 42.0, nil, two, nil\n"  # numbers are floats, as Orthanc pushes them


@needs_dcmtk
def test_worklist_filter_restricts_the_matches_to_the_calling_aet(luabroker, tmp_path):
    """Orthanc's ``test_filter_issuer_aet_from_lua``: two worklists for two stations, a query that names
    none; with the seed's filter only the calling AET's worklist matches."""
    folder = tmp_path / "worklists"
    folder.mkdir()
    two_stations(folder)
    options = {"Worklists": {"Enable": True, "Database": str(folder)}, "DicomAlwaysAllowFindWorklist": True}
    keys = ["PatientID", "(0040,0100)[0].ScheduledStationAETitle", "(0040,0100)[0].Modality"]
    for scripts, expected in (({}, ["P7814", "P7815"]), ({"worklist.lua": WORKLIST_ISSUER_AET}, ["P7815"])):
        server = luabroker(scripts, **options)
        found = findscu(server.dicom_port, server.aet, keys, model="-W", calling="ORTHANCTEST")
        assert (found.status, found.values("(0010,0020)")) == ("Success", expected)
