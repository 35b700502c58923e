"""Issue 7, finding 6: what scripts can learn of the secrets of the configuration.

By default scripts see the configuration with every secret replaced by a marker (same keys, same
shape); ``LuaExposeSecrets: true`` gives Orthanc's behaviour back. ``LuaAdminUsers`` restricts
execute-script and the operator endpoints to named users.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from broker.config import Config, ConfigError
from broker.core.origin import Origin
from broker.errors import BareHttpStatus
from broker.rest import lua
from broker.rest.types import RestRequest
from broker.scripting.redaction import REDACTED, redact

SECRETS = ["alice-pw", "bob-pw", "peer1-pw", "peer3-pw", "Bearer peer3-token", "peer3-trace", "key-pw",
           "peer3-api-token", "inline-pw", "pg-pw", "uri-pw", "dw-pw", "1234", "s3-secret", "AKIA-ID",
           "DSN=x;PWD=odbc-pw"]

CONFIG = {
    "RegisteredUsers": {"alice": "alice-pw", "bob": "bob-pw"},
    "OrthancPeers": {
        "array": ["http://peer1.example/", "user1", "peer1-pw"],
        "short": ["http://peer2.example/"],
        "object": {"Url": "http://peer3.example/", "Username": "user3", "Password": "peer3-pw",
                   "HttpHeaders": {"Authorization": "Bearer peer3-token", "X-Trace": "peer3-trace"},
                   "CertificateFile": "/etc/c.pem", "CertificateKeyFile": "/etc/k.pem",
                   "CertificateKeyPassword": "key-pw", "ApiToken": "peer3-api-token", "Region": "eu"},
        "inline": {"Url": "https://user4:inline-pw@peer4.example/"},
    },
    "PostgreSQL": {"EnableIndex": False, "Host": "db", "Port": 5432, "Username": "pg", "Password": "pg-pw",
                   "ConnectionUri": "postgresql://pg:uri-pw@db:5432/orthanc"},
    "DicomWeb": {"Servers": {"dw": ["https://dicomweb.example/", "dwuser", "dw-pw"]}},
    "Pkcs11": {"Module": "/usr/lib/pkcs11.so", "Pin": 1234},
    "AwsS3Storage": {"BucketName": "b", "AccessKey": "AKIA-ID", "SecretKey": "s3-secret"},
    "Odbc": {"IndexConnectionString": "DSN=x;PWD=odbc-pw"},
    "HttpsVerifyPeers": True,
}


def test_redact_replaces_every_secret_and_keeps_the_shape():
    seen = redact(CONFIG)
    text = json.dumps(seen)
    assert not [secret for secret in SECRETS if secret in text], text
    assert seen["RegisteredUsers"] == {"alice": REDACTED, "bob": REDACTED}
    peers = seen["OrthancPeers"]
    assert peers["array"] == ["http://peer1.example/", "user1", REDACTED]
    assert peers["short"] == ["http://peer2.example/"]
    assert peers["object"] == {
        "Url": "http://peer3.example/", "Username": "user3", "Password": REDACTED,
        "HttpHeaders": {"Authorization": REDACTED, "X-Trace": REDACTED},
        "CertificateFile": "/etc/c.pem", "CertificateKeyFile": "/etc/k.pem",
        "CertificateKeyPassword": REDACTED, "ApiToken": REDACTED, "Region": "eu"}
    assert peers["inline"] == {"Url": f"https://user4:{REDACTED}@peer4.example/"}
    assert seen["PostgreSQL"] == {"EnableIndex": False, "Host": "db", "Port": 5432, "Username": "pg",
                                  "Password": REDACTED, "ConnectionUri": f"postgresql://pg:{REDACTED}@db:5432/orthanc"}
    assert seen["DicomWeb"]["Servers"]["dw"] == ["https://dicomweb.example/", "dwuser", REDACTED]
    assert seen["Pkcs11"] == {"Module": "/usr/lib/pkcs11.so", "Pin": REDACTED}
    assert seen["AwsS3Storage"] == {"BucketName": "b", "AccessKey": REDACTED, "SecretKey": REDACTED}
    assert seen["Odbc"] == {"IndexConnectionString": REDACTED}
    assert seen["HttpsVerifyPeers"] is True
    assert CONFIG["RegisteredUsers"]["alice"] == "alice-pw"  # the configuration itself is untouched


@pytest.mark.parametrize("name", ["Password", "password", "db_password", "Passwd", "ClientSecret", "WebServiceToken",
                                  "api-key", "ApiKey", "apikey", "PrivateKey", "MasterKeys", "Credentials",
                                  "Passphrase", "ConnectionString"])
def test_secret_looking_names_are_redacted_anywhere(name):
    assert redact({"Plugin": {"Nested": [{name: "s"}]}}) == {"Plugin": {"Nested": [{name: REDACTED}]}}


@pytest.mark.parametrize("name", ["Username", "CertificateKeyFile", "KeyboardLayout", "Spin", "TokenHttpHeaders",
                                  "AccessKeyId", "StorageDirectory", "Url"])
def test_other_names_are_kept(name):
    assert redact({name: "v"}) == {name: "v"}


def test_options_default_to_redaction_and_no_restriction():
    config = Config.from_json({}, Path("/etc"))
    assert config.lua_expose_secrets is False
    assert config.lua_admin_users is None


def test_lua_admin_users_must_be_registered_users_and_need_authentication():
    users = {"RegisteredUsers": {"admin": "a"}, "AuthenticationEnabled": True}
    assert Config.from_json({**users, "LuaAdminUsers": ["admin"]}, Path("/etc")).lua_admin_users == ("admin",)
    with pytest.raises(ConfigError, match="Option 'LuaAdminUsers' names 'eve', which is not in 'RegisteredUsers'"):
        Config.from_json({**users, "LuaAdminUsers": ["eve"]}, Path("/etc"))
    with pytest.raises(ConfigError, match="Option 'LuaAdminUsers' has value 'admin'; expected a list"):
        Config.from_json({**users, "LuaAdminUsers": "admin"}, Path("/etc"))
    with pytest.raises(ConfigError, match="'LuaAdminUsers' needs 'AuthenticationEnabled'"):
        Config.from_json({"RegisteredUsers": {"admin": "a"}, "LuaAdminUsers": ["admin"]}, Path("/etc"))
    with pytest.raises(ConfigError, match="Option 'LuaExposeSecrets' has value 1; expected true or false"):
        Config.from_json({"LuaExposeSecrets": 1}, Path("/etc"))


def served(s3_bucket):
    """``CONFIG`` as a server runs with it: its ``AwsS3Storage`` names a bucket that exists (a server
    does not start without it), with ``CONFIG``'s keys."""
    return {**CONFIG, "AwsS3Storage": {**s3_bucket, **CONFIG["AwsS3Storage"], "BucketName": s3_bucket["BucketName"]}}


def test_scripts_read_a_redacted_configuration(luabroker, s3_bucket):
    server = luabroker(ExecuteLuaEnabled=True, **served(s3_bucket))
    answer = server.execute("print(DumpJson(GetOrthancConfiguration()))")
    assert answer.status_code == 200, answer.text
    seen = json.loads(answer.text)
    assert not [secret for secret in SECRETS if secret in answer.text], answer.text
    assert seen["OrthancPeers"]["array"] == ["http://peer1.example/", "user1", REDACTED]
    assert seen["RegisteredUsers"] == {"alice": REDACTED, "bob": REDACTED}


def test_lua_expose_secrets_gives_orthancs_behaviour_back(luabroker, s3_bucket):
    server = luabroker(ExecuteLuaEnabled=True, LuaExposeSecrets=True, **served(s3_bucket))
    answer = server.execute("local c = GetOrthancConfiguration() "
                            "print(c.RegisteredUsers.alice, c.OrthancPeers.array[3])")
    assert answer.text == "alice-pw, peer1-pw\n"


def test_peers_answered_to_scripts_hide_inline_credentials_and_secret_properties(luabroker):
    server = luabroker(ExecuteLuaEnabled=True, OrthancPeers=CONFIG["OrthancPeers"])
    for uri in ("/peers?expand", "/peers/inline/configuration", "/peers/object/configuration"):
        answer = server.execute(f"print(RestApiGet('{uri}'))")
        assert answer.status_code == 200 and answer.text.strip() not in ("", "nil"), answer.text
        assert "inline-pw" not in answer.text and "peer3-api-token" not in answer.text, answer.text
    # HTTP clients get Orthanc's answer (FormatPublic: no password, no header value, user properties shown).
    http = server.http.get("/peers/object/configuration").json()
    assert http["Password"] is None and http["HttpHeaders"] == ["Authorization", "X-Trace"]
    assert http["ApiToken"] == "peer3-api-token"


def test_the_http_filter_does_not_see_the_password_of_a_checked_login(luabroker):
    users = {"admin": "admin-pw", "bob": "bob-pw"}
    server = luabroker({"filter.lua": """
        function IncomingHttpRequestFilter(method, uri, ip, username, headers)
          if uri == '/system' then SEEN = username .. ' ' .. tostring(headers['authorization']) end
          return true
        end"""}, ExecuteLuaEnabled=True, AuthenticationEnabled=True, RegisteredUsers=users)
    with server.client(auth=("bob", "bob-pw")) as bob, server.client(auth=("admin", "admin-pw")) as admin:
        assert bob.get("/system").status_code == 200
        answer = admin.post("/tools/execute-script", content=b"print(SEEN)")
    assert answer.text == f"bob Basic {REDACTED}\n"
    assert base64.b64encode(b"bob:bob-pw").decode() not in answer.text


def test_lua_admin_users_restrict_execute_script_and_the_operator_endpoints(luabroker):
    server = luabroker({"noop.lua": "function OnStoredInstance() end"}, ExecuteLuaEnabled=True,
                       AuthenticationEnabled=True, RegisteredUsers={"admin": "admin-pw", "bob": "bob-pw"},
                       LuaAdminUsers=["admin"])
    with server.client(auth=("bob", "bob-pw")) as bob, server.client(auth=("admin", "admin-pw")) as admin:
        for method, uri in (("POST", "/tools/execute-script"), ("POST", "/lua/reload"), ("POST", "/lua/reset"),
                            ("POST", "/lua/events/parked/1/requeue")):
            assert bob.request(method, uri, content=b"print(1)").status_code == 403, uri
        assert bob.get("/lua/status").status_code == 200
        assert admin.post("/tools/execute-script", content=b"print(1)").text == "1\n"
        assert admin.post("/lua/reload").status_code == 200
        assert admin.post("/lua/events/parked/1/requeue").status_code == 404  # allowed; no such event


class _Services:
    def __init__(self, config: Config) -> None:
        self.config = config


def test_scripts_themselves_may_use_the_operator_endpoints():
    """A script is code an administrator installed: its ``RestApi*`` calls (origin Lua) pass the rule."""
    config = Config.from_json({"RegisteredUsers": {"admin": "a"}, "AuthenticationEnabled": True,
                               "LuaAdminUsers": ["admin"]}, Path("/etc"))
    services = _Services(config)
    lua.require_lua_admin(RestRequest("POST", "/lua/reload", origin=Origin.lua()), services)
    lua.require_lua_admin(RestRequest("POST", "/lua/reload", origin=Origin.rest("127.0.0.1", "admin")), services)
    with pytest.raises(BareHttpStatus) as refused:
        lua.require_lua_admin(RestRequest("POST", "/lua/reload", origin=Origin.rest("127.0.0.1", "bob")), services)
    assert refused.value.http_status == 403
