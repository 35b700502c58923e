"""What can go wrong when the broker calls into a sandbox, one exception each.

The split follows what the caller has to do next: a ``LuaError`` is the script's own failure (the
process and its globals survive, answer as the spec says); ``SandboxCrashed`` and ``SandboxTimeout`` mean
the process was lost (the supervisor restarts it); ``SandboxUnavailable`` means no process is there to
ask right now (backoff or quarantine), so the caller applies its fail-open / fail-closed default.
"""
from __future__ import annotations

import time


class SandboxError(Exception):
    """Base of every error raised by ``sandbox``."""


class LuaError(SandboxError):
    """The script raised an error. The process is alive and keeps its globals."""

    def __init__(self, message: str, prints: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Lines the script printed before it failed (execute-script shows them).
        self.prints: list[str] = list(prints or [])


class ScriptLoadError(SandboxError):
    """A configured script did not load (syntax error, or an error while its top level ran)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.path = path
        self.message = message

    def __str__(self) -> str:
        # Lua's message already has "path:line:" because the chunk is named "@path"; still name the file
        # first so the line is useful even when the message comes from a runtime error elsewhere.
        return f"cannot load Lua script {self.path}: {self.message}"


class SandboxCrashed(SandboxError):
    """The process died, or broke the wire protocol and was killed. It is being restarted."""

    def __init__(self, reason: str, returncode: int | None = None, stderr_tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.returncode = returncode
        self.stderr_tail = stderr_tail

    def __str__(self) -> str:
        if self.stderr_tail:
            return f"{self.reason}; last stderr: {self.stderr_tail.strip()[-500:]}"
        return self.reason


class SandboxTimeout(SandboxError):
    """The child worked past the hard deadline; its process group was SIGKILLed. It is being restarted."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seconds = seconds


class SandboxUnavailable(SandboxError):
    """No process can take the call now: restarting after failures, quarantined, stopped or fatal.

    ``retry_at`` is a ``time.monotonic()`` value (``None`` when no retry is planned).
    """

    def __init__(self, message: str, state: str, retry_at: float | None = None) -> None:
        super().__init__(message)
        self.state = state
        self.retry_at = retry_at

    @property
    def retry_in_s(self) -> float | None:
        return None if self.retry_at is None else max(0.0, self.retry_at - time.monotonic())


class SandboxBusy(SandboxUnavailable):
    """The process is in another thread's call and did not come free within the busy timeout.

    Nothing was sent; the process is fine. A filter applies its failure policy, the event dispatcher
    tries again later, a REST request answers at once instead of waiting on the script.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "busy")


class BuiltinError(Exception):
    """Raised by an rpc handler to make the Lua stub raise ``message`` in the script.

    Not a ``SandboxError``: it is the handler talking to the script, never raised to the caller of
    ``Sandbox.call``. Any other exception from a handler becomes "internal error in <builtin>".
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
