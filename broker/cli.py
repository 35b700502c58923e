"""``luabroker [CONFIG]``: run the server with an Orthanc JSON configuration file (or directory).

SIGHUP reloads the Lua scripts (``LuaScripts`` read again, as ``POST /lua/reload``); SIGTERM, SIGINT and
``POST /tools/shutdown`` stop cleanly (exit status 0); ``POST /tools/reset`` stops cleanly and starts
again with the configuration read anew (docs/operations.md)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace

from broker.config import Config, ConfigError
from broker.scripting.script_log import EscapeControlCharacters
from broker.server import Server
from broker.workers.supervisor import CANNOT_START, RESET_EXIT, SHUTDOWN_EXIT, Supervisor
from sandbox import ScriptLoadError

log = logging.getLogger("luabroker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="luabroker", description=__doc__)
    parser.add_argument("config", nargs="?", help="Orthanc JSON configuration file or directory")
    parser.add_argument("--verbose", action="store_true", help="log at INFO level")
    # Set by the supervisor of the worker processes (broker.workers.supervisor), not by operators.
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dicom-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--http-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        config = Config.load(args.config)
    except ConfigError as exc:
        print(f"luabroker: cannot start: {exc}", file=sys.stderr)
        return CANNOT_START
    # With several processes, each line says which one wrote it.
    process = " [%(process)d]" if config.supervised else ""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"%(asctime)s %(levelname).1s{process} %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # one record, one line: script text may be in any record
        handler.addFilter(EscapeControlCharacters())
    try:
        if args.worker is not None:
            return run_worker(replace(config, dicom_port=args.dicom_port, http_port=args.http_port), args.worker)
        if config.supervised:
            reset = Supervisor(config, args.config, args.verbose).run()
        else:
            reset = Server(config).run()
    except (ConfigError, ScriptLoadError, OSError) as exc:
        print(f"luabroker: cannot start: {exc}", file=sys.stderr)
        return CANNOT_START
    if reset:
        return restart(argv)
    return 0


def run_worker(config: Config, index: int) -> int:
    """One worker process: its exit status tells the supervisor how it ended."""
    server = Server(config, worker=index)
    if server.run_worker():
        return RESET_EXIT
    return SHUTDOWN_EXIT if server.shutdown_requested else 0


def restart(argv: list[str] | None) -> int:
    """``POST /tools/reset``, once the server has stopped cleanly: run the same command line again in
    this process (``os.execv``), which reads the configuration file(s) and the scripts anew. Returns
    only if the exec failed (status 1).

    Orthanc loops in ``main`` instead (``OrthancInitialize`` then ``StartOrthanc`` again). Re-executing
    is the more robust way for a Python server, for these reasons:

    * **Nothing of the old server survives.** A clean stop ends what it owns, but an in-process restart
      would still inherit whatever it did not own: a thread still finishing a request past the HTTP
      grace period or an association being aborted, a logger level set by ``/tools/log-level`` (global
      to the interpreter; Orthanc resets its logging on reset too), module state, memory fragmentation.
      After ``execv`` the new server is exactly a cold start, on the one start-up path that is tested.
    * **The same process.** The pid does not change, so a supervisor (systemd, a container's PID 1, a
      test's ``Popen``) keeps watching the right process and sees no exit; stdin, stdout and stderr,
      the working directory (relative configuration paths) and the environment are kept.
    * **Nothing leaks through.** Python opens every descriptor non-inheritable (PEP 446), and the store,
      the listening sockets and the sandboxes are closed or stopped before this runs, so the new
      process binds the same ports at once (both servers set ``SO_REUSEADDR``).

    The command line is the one this process was started with (``sys.orig_argv``: ``python -m
    broker.cli ...``, or the ``luabroker`` script), run by the same interpreter. When ``main`` was called
    with explicit arguments (a program embedding it), ``python -m broker.cli`` with those arguments.
    A configuration that no longer loads fails as at a cold start: "cannot start", status 1, as Orthanc.
    """
    if argv is None:
        command = [sys.executable, *sys.orig_argv[1:]]
    else:
        command = [sys.executable, "-m", "broker.cli", *argv]
    log.warning("luabroker is restarting (reset): %s", " ".join(command))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, command)
    except OSError as exc:
        print(f"luabroker: cannot restart: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
