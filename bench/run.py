"""``make bench``: every row of issue 12's table against a real Orthanc in the same run, with storescp as the
limit of the ingest rows; prints the table and writes it into ``docs/benchmarks.md``.

Rows (``--rows``, comma-separated): ``ingest1``, ``ingest4`` (C-STORE, 1 and 4 associations),
``lua-rest`` (``RestApiGet('/patients')`` from Lua), ``http``, ``http-filter`` (``GET /patients`` under wrk,
without and with a Lua ``IncomingHttpRequestFilter``), ``recovery`` (kill -9 of the main sandbox).
Rounds alternate between the servers (and storescp) in a rotating order, so that both see the same
machine load, and every round starts each server fresh. Tests never assert timings; this only reports.

    python -m bench.run [--rows ingest1,http] [--rounds 3] [--count 500] [--workers N] [--no-write]

Run from the repository root with Orthanc, DCMTK and wrk installed (``make bench`` sees to it).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.http_load import generator, requests_per_second
from bench.ingest import measure
from bench.lua_rest import per_call
from bench.recovery import recovery_ms
from bench.report import (
    ROOT,
    code_state,
    describe_code,
    load_average,
    machine,
    markdown_section,
    text_table,
    versions,
    write_section,
)
from bench.rows import Row, Target
from bench.storescp_limit import measure_storescp
from tests.support.factory import make_instances, write_files
from tests.support.orthanc_peer import ORTHANC_BINARY


def table_rows(count: int) -> list[Row]:
    """The rows of issue 12, in its order, with its targets."""
    return [
        Row("ingest1", f"C-STORE of {count} CT instances, 1 association", "/s",
            Target("ratio_at_least", 1.2, "≥ 1.2×")),
        Row("ingest4", "same, 4 associations", "/s", Target("ratio_at_least", 1.5, "≥ 1.5×")),
        Row("lua-rest", "`RestApiGet('/patients')` from Lua, wall time per call", "µs",
            Target("ratio_at_most", 3, "≤ 3× slower")),
        Row("http", "`GET /patients` (empty archive), wrk 2 threads × 8 connections", "req/s",
            Target("ratio_at_least", 0.5, "≥ 0.5")),
        Row("http-filter", "same, with a Lua `IncomingHttpRequestFilter`", "req/s",
            Target("ratio_at_least", 0.5, "≥ 0.5")),
        Row("recovery", "kill -9 of the main sandbox → next execute-script answered", "ms",
            Target("luabroker_at_most", 20, "≤ 20 ms")),
    ]


def alternate(row: Row, rounds: int, sides: dict[str, Callable[[], float]]) -> None:
    """Run each side once per round, the order rotating every round; append the samples to ``row``.

    A side that fails (a server that does not start, an error answer under load) empties the row and says
    why in its note, and the run goes on with the other rows: one broken row must not cost the table."""
    samples = {"luabroker": row.luabroker, "orthanc": row.orthanc, "storescp": row.limit}
    names = list(sides)
    for index in range(rounds):
        order = names[index % len(names):] + names[:index % len(names)]
        for name in order:
            try:
                value = sides[name]()
            except Exception as error:  # reported in the table, the other rows still run
                for values in samples.values():
                    values.clear()
                row.note = f"not measured: {name} failed in round {index + 1}: {str(error)[:300]}"
                print(f"  {row.key}: {row.note}", flush=True)
                return
            samples[name].append(value)
            print(f"  {row.key} round {index + 1}/{rounds}: {name} {value:.1f} {row.unit}", flush=True)


def run_ingest(rows: dict[str, Row], args: argparse.Namespace) -> None:
    wanted = [(key, n) for key, n in (("ingest1", 1), ("ingest4", 4)) if key in rows]
    if not wanted:
        return
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        files = write_files(make_instances(args.count, series=5), Path(tmp) / "data")
        warmup = write_files(make_instances(20, patient_id="WARMUP"), Path(tmp) / "warmup")
        for key, associations in wanted:
            rows[key].note = f"luabroker with `Workers: {args.workers}`"
            alternate(rows[key], args.rounds, {
                "luabroker": partial(measure, "luabroker", files, associations, warmup, args.workers),
                "orthanc": partial(measure, "orthanc", files, associations, warmup),
                "storescp": partial(measure_storescp, files, associations, warmup),
            })


def run_lua_rest(row: Row, args: argparse.Namespace) -> None:
    row.note = f"{args.calls} calls per script, median of {args.repeats} pairs per round"
    alternate(row, args.rounds, {kind: partial(per_call, kind, args.calls, args.repeats)
                                 for kind in ("luabroker", "orthanc")})


def run_http(row: Row, args: argparse.Namespace, with_filter: bool) -> None:
    row.note = f"luabroker with `Workers: {args.workers}`"
    alternate(row, args.rounds, {"luabroker": partial(requests_per_second, "luabroker", with_filter, args.seconds,
                                                      args.workers),
                                 "orthanc": partial(requests_per_second, "orthanc", with_filter, args.seconds)})


def run_recovery(row: Row, args: argparse.Namespace) -> None:
    try:
        median, row.note = recovery_ms(args.recovery_rounds)
    except Exception as error:  # a timeout of the module: reported, the table still written
        median, row.note = None, f"not measured: bench/sandbox_recovery.py failed: {str(error)[:300]}"
    if median is not None:
        row.luabroker.append(median)
    print(f"  recovery: {row.note}", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=" ".join((__doc__ or "").split("\n\n")[0].split()))
    parser.add_argument("--rows", default="ingest1,ingest4,lua-rest,http,http-filter,recovery",
                        help="comma-separated rows to run (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per row (default 3)")
    parser.add_argument("--count", type=int, default=500, help="CT instances per ingest round (default 500)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="luabroker's Workers in the ingest rows (default: one per core)")
    parser.add_argument("--calls", type=int, default=2000, help="RestApiGet calls per script (default 2000)")
    parser.add_argument("--repeats", type=int, default=7, help="script pairs per Lua round (default 7)")
    parser.add_argument("--seconds", type=float, default=5, help="seconds of wrk per HTTP round (default 5)")
    parser.add_argument("--recovery-rounds", type=int, default=20, help="kills for the recovery row (default 20)")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="write the table into docs/benchmarks.md (default: only when every row ran)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md",
                        help="the Markdown file whose section is replaced (default docs/benchmarks.md)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if ORTHANC_BINARY is None:
        sys.exit("Orthanc is not installed (apt-get install orthanc)")
    every = table_rows(args.count)
    keys = {key.strip() for key in args.rows.split(",") if key.strip()}
    unknown = keys - {row.key for row in every}
    if unknown:
        sys.exit(f"unknown rows: {', '.join(sorted(unknown))}")
    rows = {row.key: row for row in every if row.key in keys}
    before, load_before = code_state(), load_average()
    started = datetime.datetime.now(datetime.UTC)
    load = generator()
    print(f"bench: rows {', '.join(rows)}; {args.rounds} rounds; load generator {load}", flush=True)
    run_ingest(rows, args)
    if "lua-rest" in rows:
        run_lua_rest(rows["lua-rest"], args)
    for key, with_filter in (("http", False), ("http-filter", True)):
        if key in rows:
            run_http(rows[key], args, with_filter)
    if "recovery" in rows:
        run_recovery(rows["recovery"], args)
    after = code_state()
    measured = list(rows.values())
    code_text = describe_code(before, after)
    load_after = load_average()
    load_text = (f"load average (1 min) {load_before:.1f} at the start, {load_after:.1f} at the end (which "
                 "counts the benchmark's own servers and clients)")
    cores = os.cpu_count() or 1
    # Only the load before the run says whether other work shared the machine: at the end, the 1-minute
    # average is mostly the benchmark's own.
    caveat = (f"**The machine was busy** (load average above its {cores} cores before the run: other work ran "
              "beside the benchmark), so every figure is lower and noisier than on a quiet machine; the rounds "
              "alternate, so the ratios suffer less than the rates." if load_before > cores else "")
    print()
    print(text_table(measured))
    print(f"\n{machine()}; {load_text}\n{versions(load)}\n{code_text}\n{caveat}".rstrip())
    if not (args.write if args.write is not None else len(rows) == len(every)):
        print("not written to the docs (a subset of the rows, or --no-write)")
        return
    settings = (f"`--rows {','.join(rows)} --rounds {args.rounds} --count {args.count} --workers {args.workers} "
                f"--calls {args.calls} "
                f"--repeats {args.repeats} --seconds {args.seconds:g} --recovery-rounds {args.recovery_rounds}`")
    section = markdown_section(measured, date=started.strftime("%Y-%m-%d %H:%M UTC"),
                               machine_text=f"{machine()}; {load_text}", versions_text=versions(load),
                               code_text=code_text, settings=settings, caveat=caveat)
    write_section(args.docs, section)
    print(f"written to {args.docs}")


if __name__ == "__main__":
    main()
