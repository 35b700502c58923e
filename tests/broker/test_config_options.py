"""Every option is read by ``broker.config`` and a bad value is reported in one style, whichever
section it belongs to: ``Option 'X' has value V; expected E``, a nested option named by its full path."""
from __future__ import annotations

import os
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from broker.config import Config, ConfigError
from broker.config.jobs import JobsSettings, RetryPolicy
from broker.config.network import DicomOptions, HttpOptions
from broker.config.options import Section
from broker.config.scripts import FILTER_CALLBACKS, ScriptOptions, read_script_options
from broker.scripting.callbacks import CALLBACKS, Kind

BASE = Path("/etc/luabroker")


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        Config.from_json(raw, BASE)
    return str(caught.value)


@pytest.mark.parametrize("raw, message", [
    # Formerly read by the jobs engine.
    ({"ConcurrentJobs": 0}, "Option 'ConcurrentJobs' has value 0; expected an integer >= 1"),
    ({"SaveJobs": "no"}, "Option 'SaveJobs' has value 'no'; expected true or false"),
    ({"Jobs": []}, "Option 'Jobs' has value []; expected an object"),
    ({"Jobs": {"RetryAttempts": 1.5}}, "Option 'Jobs.RetryAttempts' has value 1.5; expected an integer >= 1"),
    ({"Jobs": {"RetryDelay": -1}}, "Option 'Jobs.RetryDelay' has value -1; expected a number >= 0"),
    ({"Jobs": {"LuaTransferFailure": "skip"}},
     "Option 'Jobs.LuaTransferFailure' has value 'skip'; expected \"fail\" or \"continue\""),
    ({"Jobs": {"CallSystemEnabled": 1}}, "Option 'Jobs.CallSystemEnabled' has value 1; expected true or false"),
    # Formerly read by the network clients.
    ({"DicomScuTimeout": "10"}, "Option 'DicomScuTimeout' has value '10'; expected a number >= 0"),
    ({"HttpsVerifyPeers": "yes"}, "Option 'HttpsVerifyPeers' has value 'yes'; expected true or false"),
    ({"HttpProxy": 3128}, "Option 'HttpProxy' has value 3128; expected a string"),
    ({"OrthancPeers": []}, "Option 'OrthancPeers' has value []; expected an object of symbolic names"),
    # Formerly read by the metrics endpoint.
    ({"MetricsEnabled": "false"}, "Option 'MetricsEnabled' has value 'false'; expected true or false"),
    ({"Workers": -1}, "Option 'Workers' has value -1; expected an integer >= 0 (0: one per core)"),
    # Nested options of the LuaSandbox section.
    ({"LuaSandbox": {"LogRateLimit": {"Burst": 0}}},
     "Option 'LuaSandbox.LogRateLimit.Burst' has value 0; expected an integer >= 1"),
    ({"LuaSandbox": {"CallTimeout": True}}, "Option 'LuaSandbox.CallTimeout' has value True; expected a number > 0"),
])
def test_a_bad_value_names_the_option_its_value_and_what_is_expected(raw: dict[str, Any], message: str) -> None:
    assert refused(raw) == message


def test_every_message_has_the_same_shape() -> None:
    shape = re.compile(r"^Option '[A-Za-z.]+' has value .+; expected .+$")
    for raw in ({"HttpPort": "x"}, {"Jobs": {"CallSystemTimeout": 0}}, {"HttpTimeout": None},
                {"DicomAssociationCloseDelay": -1}, {"LuaSandbox": {"Isolation": {"Seccomp": "on"}}}):
        assert shape.match(refused(raw)), raw


def test_the_defaults_are_the_documented_ones() -> None:
    config = Config.from_json({"DicomAet": "ME"}, BASE)
    assert config.jobs == JobsSettings(workers=2, history_size=10, persist=True, default_local_aet="ME",
                                       retry=RetryPolicy(max_attempts=4, initial_delay_s=2.0, max_delay_s=60.0),
                                       lua_trailing_timeout_s=5.0, lua_transfer_failure="fail",
                                       call_system_enabled=False, call_system_timeout_s=60.0)
    assert config.network.dicom == DicomOptions(default_aet="ME", association_close_delay=5, scu_timeout=10)
    assert config.network.http == HttpOptions(timeout=60, proxy="", verify_peers=True, ca_certificates="",
                                              lua_allowed_hosts=None)
    assert (config.metrics_enabled, config.check_revisions, config.ssl_enabled) == (True, False, False)


def test_workers_is_one_per_core_by_default_and_1_is_one_process() -> None:
    cores = len(os.sched_getaffinity(0))
    assert Config.from_json({}, BASE).workers == cores
    assert Config.from_json({"Workers": 0}, BASE).workers == cores
    assert Config.from_json({"Workers": 3}, BASE).workers == 3
    assert Config.from_json({"Workers": 1}, BASE).workers == 1


def test_call_system_is_on_by_default_in_trusted_mode() -> None:
    config = Config.from_json({"LuaScripts": ["a.lua"], "LuaTrustedScripts": ["a.lua"]}, BASE)
    assert config.jobs.call_system_enabled


def test_the_options_of_a_script_set_are_one_group_a_tenant_can_replace() -> None:
    """The shape the ``Tenants`` section will use: the server's options stay, the script set's change."""
    raw = {"HttpPort": 8000, "LuaScripts": ["a.lua"], "LuaSandbox": {"CallTimeout": 3}}
    config = Config.from_json(raw, BASE)
    tenant = read_script_options(Section({**raw, "LuaScripts": ["b.lua"], "LuaExposeSecrets": True}), BASE)
    mixed = replace(config, **{f.name: getattr(tenant, f.name) for f in fields(ScriptOptions)})
    assert (mixed.http_port, mixed.lua_scripts, mixed.lua_expose_secrets) == (8000, (BASE / "b.lua",), True)
    assert mixed.lua_limits.soft_cpu_s == 3  # what the tenant does not set is the server's


def test_the_filters_the_failure_policy_names_are_the_declared_filter_callbacks() -> None:
    assert sorted(FILTER_CALLBACKS) == sorted(name for name, callback in CALLBACKS.items()
                                              if callback.kind is Kind.FILTER)


def test_restart_wait_bounds_the_wait_of_a_call_for_a_restarting_process() -> None:
    assert Config.from_json({}, BASE).lua_backoff.max_call_wait_s == 2.0
    assert Config.from_json({"LuaSandbox": {"RestartWait": 7.5}}, BASE).lua_backoff.max_call_wait_s == 7.5
    with pytest.raises(ConfigError, match="RestartWait"):
        Config.from_json({"LuaSandbox": {"RestartWait": 0}}, BASE)
