"""The Python side of a Lua sandbox: spawn a stock ``lua5.4`` child, talk frames, supervise it.

This package knows nothing about DICOM or Orthanc: it runs named functions in a child interpreter and
serves the child's ``rpc`` requests through a handler that the caller provides. ``Sandbox`` is the
public entry point; see docs/sandbox.md.
"""
from sandbox.budget import bounded as bounded_by_budget
from sandbox.channel import CallInfo
from sandbox.errors import (
    BuiltinError,
    LuaError,
    SandboxBusy,
    SandboxCrashed,
    SandboxError,
    SandboxTimeout,
    SandboxUnavailable,
    ScriptLoadError,
)
from sandbox.isolation import Isolation, IsolationError, IsolationPlan, LayerReport
from sandbox.limits import BackoffPolicy, CallBounds, Limits, next_delay
from sandbox.states import State
from sandbox.supervisor import CallResult, LuaModule, Sandbox, SandboxConfig, ScriptSource

__all__ = [
    "Sandbox", "SandboxConfig", "ScriptSource", "LuaModule", "CallResult", "CallInfo", "Limits", "BackoffPolicy",
    "next_delay", "State", "Isolation", "IsolationError", "IsolationPlan", "LayerReport",
    "SandboxError", "LuaError", "ScriptLoadError", "SandboxCrashed", "SandboxTimeout", "SandboxUnavailable",
    "SandboxBusy", "BuiltinError", "CallBounds", "bounded_by_budget",
]
