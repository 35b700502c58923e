"""The lifecycle states of a sandbox process, and the groups that code asks about.

No dependencies, so every module (and the docs) can name a state without importing the supervisor.

    STOPPED ──start()──► STARTING ──ready + scripts loaded + Initialize──► READY
    STARTING ──script error on the first start──► FATAL
    STARTING / READY ──crash, hard timeout, protocol error──► BACKOFF, or QUARANTINED after
                                                              too many failures in the window
    BACKOFF ──delay passed──► STARTING      QUARANTINED ──cooldown passed──► STARTING
    any ──stop()──► STOPPING ──► STOPPED
"""
from __future__ import annotations

import enum


class State(enum.Enum):
    STOPPED = "STOPPED"          # never started, or stopped on purpose
    STARTING = "STARTING"        # spawned; waiting for "ready", loading scripts, running Initialize
    READY = "READY"              # serving calls (earned only after ready + scripts + Initialize)
    BACKOFF = "BACKOFF"          # lost its process; a restart is scheduled
    QUARANTINED = "QUARANTINED"  # failed too often in the window; calls refused until the cooldown ends
    STOPPING = "STOPPING"        # stop() in progress
    FATAL = "FATAL"              # cannot work without a configuration change (script does not load)


#: A call can be served right away.
CALLABLE_STATES = frozenset({State.READY})
#: No process, and one is expected soon: a call may wait a short while.
RECOVERING_STATES = frozenset({State.STARTING, State.BACKOFF})
#: No process is coming back by itself in these states.
STOPPED_STATES = frozenset({State.STOPPED, State.STOPPING, State.FATAL})
#: The supervisor thread restarts from these when their time has come.
RESTARTABLE_STATES = frozenset({State.BACKOFF, State.QUARANTINED})
#: ``start()`` is allowed from these.
STARTABLE_STATES = frozenset({State.STOPPED, State.FATAL})


#: The moves ``change_state`` accepts; anything else is a bug in the supervisor.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.READY, State.BACKOFF, State.QUARANTINED, State.FATAL, State.STOPPING}),
    State.READY: frozenset({State.BACKOFF, State.QUARANTINED, State.STOPPING}),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPING}),
    State.QUARANTINED: frozenset({State.STARTING, State.STOPPING}),
    State.FATAL: frozenset({State.STARTING, State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED}),
}


def state_name(state: State) -> str:
    return state.value
