"""The recovery row: kill -9 of the main sandbox → next execute-script answered.

Measured by ``bench/sandbox_recovery.py`` (its own module, written separately); this only runs it as a
subprocess and reads the median off its ``kill -9`` line, so that its method stays in one place. When
the module is absent, or prints no such line, the row is left "not measured" with the reason.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

MODULE = Path(__file__).resolve().parent / "sandbox_recovery.py"
LINE = re.compile(r"kill -9.*?best\s+([\d.]+)\s*ms.*?median\s+([\d.]+)\s*ms.*?max\s+([\d.]+)\s*ms")


def recovery_ms(rounds: int) -> tuple[float | None, str]:
    """The median in ms (None when not measured) and a note: best and max, or why there is no figure."""
    if not MODULE.exists():
        return None, "not measured: bench/sandbox_recovery.py does not exist yet"
    run = subprocess.run([sys.executable, "-m", "bench.sandbox_recovery", "--rounds", str(rounds)],
                         capture_output=True, text=True, cwd=MODULE.parent.parent, timeout=600)
    for line in run.stdout.splitlines():
        match = LINE.search(line)
        if match:
            best, median, worst = map(float, match.groups())
            return median, f"{rounds} kills, best {best:.1f} ms, max {worst:.1f} ms (bench/sandbox_recovery.py)"
    print(run.stdout, run.stderr[-2000:], sep="\n", file=sys.stderr)
    return None, f"not measured: bench/sandbox_recovery.py exited {run.returncode} without a kill -9 median"
