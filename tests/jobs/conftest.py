"""The real in-process server of tests/integration (``luabroker(scripts={...}, **config)``), for the
jobs tests."""
from integration.conftest import Running, luabroker  # noqa: F401  (the fixture, re-exported)
