"""``luabroker [CONFIG]``: run the server with an Orthanc JSON configuration file (or directory).

SIGHUP reloads the Lua scripts (``LuaScripts`` read again, as ``POST /lua/reload``); SIGTERM and SIGINT
stop cleanly (docs/operations.md)."""
from __future__ import annotations

import argparse
import logging
import sys

from broker.config import Config, ConfigError
from broker.scripting.script_log import EscapeControlCharacters
from broker.server import Server
from sandbox import ScriptLoadError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="luabroker", description=__doc__)
    parser.add_argument("config", nargs="?", help="Orthanc JSON configuration file or directory")
    parser.add_argument("--verbose", action="store_true", help="log at INFO level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # one record, one line: script text may be in any record
        handler.addFilter(EscapeControlCharacters())
    try:
        Server(Config.load(args.config)).run()
    except (ConfigError, ScriptLoadError, OSError) as exc:
        print(f"luabroker: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
