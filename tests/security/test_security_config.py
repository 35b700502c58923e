"""The security options of the configuration: ``LuaSandbox.Isolation`` and ``LuaTrustedScripts``."""
from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import Config, ConfigError
from sandbox import Isolation

BASE = Path("/etc/luabroker")


def load(raw: dict) -> Config:
    return Config.from_json(raw, BASE)


def test_defaults_are_every_layer_the_host_allows_and_no_trusted_script():
    config = load({})
    assert config.lua_isolation == Isolation()
    assert config.lua_isolation == Isolation(bubblewrap="auto", seccomp="auto", landlock="auto", unshare="auto",
                                             user="nobody", group=None, trusted_file_size_mb=1024)
    assert config.lua_trusted_scripts == ()


def test_every_isolation_option():
    config = load({"LuaSandbox": {"Isolation": {"Bubblewrap": "required", "Seccomp": "off", "Landlock": "auto",
                                                "Unshare": "off", "User": "luabroker", "Group": 999,
                                                "TrustedFileSizeMB": 0}}})
    assert config.lua_isolation == Isolation(bubblewrap="required", seccomp="off", landlock="auto", unshare="off",
                                             user="luabroker", group=999, trusted_file_size_mb=0)


def test_user_off_keeps_the_brokers_uid():
    assert load({"LuaSandbox": {"Isolation": {"User": "off"}}}).lua_isolation.user is None


@pytest.mark.parametrize("isolation, message", [
    ({"Bubblewrap": "yes"},
     "'LuaSandbox.Isolation.Bubblewrap' has value 'yes'; expected \"auto\", \"required\" or \"off\""),
    ({"Seccomp": True}, "'LuaSandbox.Isolation.Seccomp' has value True"),
    ({"User": 0}, "'LuaSandbox.Isolation.User' has value 0"),
    ({"User": ""}, "'LuaSandbox.Isolation.User' has value ''"),
    ({"Group": [1]}, "'LuaSandbox.Isolation.Group' has value [1]"),
    ({"TrustedFileSizeMB": -1}, "'LuaSandbox.Isolation.TrustedFileSizeMB' has value -1; expected an integer >= 0"),
    ({"Seccom": "off"}, "unknown member 'Seccom'"),
])
def test_bad_isolation_options_stop_start_up_with_a_clear_message(isolation, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        load({"LuaSandbox": {"Isolation": isolation}})


def test_trusted_scripts_must_be_configured_scripts():
    config = load({"LuaScripts": ["a.lua", "/opt/b.lua"], "LuaTrustedScripts": ["/opt/b.lua"]})
    assert config.lua_trusted_scripts == (Path("/opt/b.lua"),)
    config = load({"LuaScripts": "a.lua, b.lua", "LuaTrustedScripts": ["b.lua"]})
    assert config.lua_trusted_scripts == (BASE / "b.lua",)
    with pytest.raises(ConfigError, match="'LuaTrustedScripts' names '/etc/luabroker/c.lua', which is not in "
                                          "'LuaScripts'"):
        load({"LuaScripts": ["a.lua"], "LuaTrustedScripts": ["c.lua"]})
    with pytest.raises(ConfigError, match="'LuaTrustedScripts' has value 'a.lua'; expected a list of paths"):
        load({"LuaScripts": ["a.lua"], "LuaTrustedScripts": "a.lua"})
