"""Numbers shared by the security tests."""
from __future__ import annotations

from sandbox import BackoffPolicy, Limits
from tests.support.sandboxes import FAKE_SHIM

#: Small limits so the whole suite stays fast: 0.5 s of CPU per call; the 5 s hard deadline leaves room
#: for a loaded machine (the soft limit counts CPU time, the hard one wall-clock time).
LIMITS = Limits(soft_cpu_s=0.5, hard_timeout_s=5.0, memory_kb=64 * 1024, address_space_mb=512,
                max_frame=16 * 1024 * 1024, max_log_lines=50)
#: Restart at once, quarantine after 3 failures; a call waits for a restart in progress as long as a loaded
#: machine may take to start a process.
BACKOFF = BackoffPolicy(initial_s=0.0, base_s=0.05, cap_s=0.2, jitter=0.0, max_failures=3, window_s=60,
                        cooldown_s=30, max_call_wait_s=30.0)
#: A test-only shim that runs scripts in the real globals and can write raw bytes (io, raw_write, exit).
PARROT_SHIM = FAKE_SHIM
