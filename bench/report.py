"""The table of ``make bench``: printed, and written into ``docs/benchmarks.md`` with the machine and versions.

A figure means little without the machine it was taken on and the code it measured, so the section
names both: cores, CPU model and memory, the versions of Orthanc, DCMTK, wrk and Lua, and the git
commit of luabroker (with a note when ``broker/`` or ``sandbox/`` had uncommitted changes, or changed
while the benchmark ran: other work goes on in the same tree). Only the section under ``HEADING`` is
replaced on each run; the rest of the file is left as it is.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import textwrap
from pathlib import Path

from bench.rows import Row, cell, percent, verdict

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## make bench: every row of issue 12"
#: Line width of the prose in docs/benchmarks.md.
WIDTH = 104


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def machine() -> str:
    """``2 cores, AMD EPYC, 23.5 GiB RAM, Debian GNU/Linux 12 (bookworm), Linux 6.1``."""
    model = "unknown CPU"
    memory = "?"
    system = platform.system()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")))
        memory = f"{kib / 1024 / 1024:.1f}"
        system = next(line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                      if line.startswith("PRETTY_NAME="))
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} cores, {model}, {memory} GiB RAM, {system}, Linux {platform.release()}"


def load_average() -> float:
    """The 1-minute load average: other work on the machine (tests run in parallel) shifts every figure."""
    return os.getloadavg()[0]


def versions(load_generator: str) -> str:
    orthanc = _first_line(["/usr/sbin/Orthanc", "--version"]).split()[-1]
    dcmtk = re.sub(r"^\$dcmtk: (\S+ v[\d.]+).*", r"\1", _first_line(["storescp", "--version"]))
    return (f"Orthanc {orthanc} (Debian package), DCMTK {dcmtk.replace('storescp ', '')} "
            f"(storescu, storescp), {_first_line(['lua5.4', '-v']).split('  ')[0]}, "
            f"Python {platform.python_version()}, load generator {load_generator}")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def code_state() -> tuple[str, bool, str]:
    """The commit at HEAD, whether ``broker/`` or ``sandbox/`` differ from it, and a hash of the files
    there as they are on disk (tracked and untracked): a commit of changes already measured leaves the
    hash alone, an edit between two rounds changes it."""
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "broker", "sandbox"))
    digest = hashlib.sha1()
    for name in sorted(_git("ls-files", "--cached", "--others", "--exclude-standard", "--", "broker", "sandbox")
                       .splitlines()):
        digest.update(name.encode())
        try:
            digest.update((ROOT / name).read_bytes())
        except OSError:
            pass
    return commit, dirty, digest.hexdigest()[:12]


def describe_code(before: tuple[str, bool, str], after: tuple[str, bool, str]) -> str:
    commit, dirty, content = before
    text = f"luabroker at commit `{commit}`"
    if dirty:
        text += f" plus uncommitted changes in broker/ or sandbox/ (content hash `{content}`)"
    if after[2] != content:
        text += (f"; **broker/ or sandbox/ changed during the run** (then at `{after[0]}`, content hash "
                 f"`{after[2]}`): rounds may mix versions")
    elif after[0] != commit:
        text += f"; HEAD moved to `{after[0]}` during the run, broker/ and sandbox/ unchanged"
    return text


def limit_cell(row: Row) -> str:
    return cell(row.limit, row.unit) if row.limit else "—"


def share_cell(row: Row) -> str:
    if not row.limit:
        return "—"
    return f"{percent(row.share(row.ours))} / {percent(row.share(row.theirs))}"


def ratio_cell(row: Row) -> str:
    return "—" if row.ratio is None else f"{row.ratio:.2f}×"


def text_table(rows: list[Row]) -> str:
    """The table for the terminal."""
    header = ("work", "luabroker", "Orthanc", "ratio", "storescp", "share lb/Or", "target", "met")
    lines = [[r.work, cell(r.luabroker, r.unit), cell(r.orthanc, r.unit), ratio_cell(r), limit_cell(r),
              share_cell(r), r.target.text, verdict(r.met).strip("*")] for r in rows]
    widths = [max(len(str(line[i])) for line in [list(header), *lines]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)) for line in lines]
    notes = [f"  {r.key}: {r.note}" for r in rows if r.note]
    return "\n".join(out + notes)


def wrap(text: str, indent: str = "") -> str:
    """A paragraph (or a list item, ``indent`` for its next lines) wrapped as the rest of the docs are."""
    return textwrap.fill(text, width=WIDTH, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def markdown_section(rows: list[Row], *, date: str, machine_text: str, versions_text: str, code_text: str,
                     settings: str, caveat: str = "") -> str:
    """The whole section, from ``HEADING`` to just before the next ``## ``."""
    table = ["| work | luabroker | Orthanc | ratio luabroker / Orthanc | storescp (limit) "
             "| share of the limit: luabroker / Orthanc | target | met |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        table.append(f"| {r.work} | {cell(r.luabroker, r.unit)} | {cell(r.orthanc, r.unit)} | {ratio_cell(r)} "
                     f"| {limit_cell(r)} | {share_cell(r)} | {r.target.text} | {verdict(r.met)} |")
    notes = [wrap(f"- {r.work}: {r.note}.", "  ") for r in rows if r.note]
    method = [
        "- C-STORE: `bench.ingest.measure` (the script, warm-up, clock and check described in the next "
        "section); storescp: `storescp --fork -od <tmp>` receiving the same files after the same warm-up "
        "(`bench/storescp_limit.py`).",
        "- `RestApiGet('/patients')`: one `/tools/execute-script` making N calls, minus the same loop without "
        "the call, divided by N; medians of several pairs per round (`bench/lua_rest.py`). A clock inside Lua "
        "would not do: `os.clock` is the CPU time of the Lua process, which in luabroker does not run while "
        "the broker answers the call; `os.time` counts seconds.",
        "- `GET /patients`: `wrk -t2 -c8` after a 1 s warm-up, on an empty archive, with no script or with an "
        "`IncomingHttpRequestFilter` returning `true`; any non-2xx answer or socket error fails the run "
        "(`bench/http_load.py`).",
        "- kill -9: `bench/sandbox_recovery.py` (see its section), read by `bench/recovery.py`.",
    ]
    return "\n".join([
        HEADING, "",
        "```sh",
        "make bench                                  # every row, defaults below (a few minutes on 2 cores)",
        'make bench BENCH="--rows http,http-filter"  # some rows (printed only, unless --write)',
        ".venv/bin/python -m bench.run --help        # rows, counts, rounds, --write/--no-write",
        "```", "",
        wrap(f"Written by `python -m bench.run` on {date}. Machine: {machine_text}. {versions_text}. "
             f"{code_text}. Settings: {settings}.{' ' + caveat if caveat else ''}"), "",
        *table, "",
        wrap("Each cell is the median over the rounds, with the range in brackets. The ratio divides the "
             "medians; for the µs row it is how many times slower luabroker is. The share of the limit is a "
             "server's rate divided by storescp's on the same files, client and disk."),
        *([""] + notes if notes else []), "",
        wrap("How each row is measured: each server is started fresh as a separate process for every round, "
             "both with the same Lua script and storage in a temporary directory on the local disk, Orthanc "
             "with its default configuration plus ports, storage, the script and `ExecuteLuaEnabled` where "
             "needed; rounds alternate between the servers (and the limit) in a rotating order."),
        *(wrap(item, "  ") for item in method),
        "",
    ])


def write_section(path: Path, section: str) -> None:
    """Replace the section under ``HEADING`` in ``path`` (up to the next ``## `` heading), or insert it
    before the first section after the introduction."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == HEADING]
    if starts:
        begin = starts[0]
        end = next((i for i in range(begin + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    else:
        begin = end = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    block = section.rstrip("\n") + ("\n" if end == len(lines) else "\n\n")
    path.write_text("".join(lines[:begin] + [block] + lines[end:]))

