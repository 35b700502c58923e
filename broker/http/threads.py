"""The worker threads of the HTTP server: where the blocking handlers, the Lua HTTP filter and the
spooling of large bodies run, off the event loop.

A plain ``ThreadPoolExecutor`` handed to ``loop.run_in_executor``: starlette's ``run_in_threadpool``
goes through anyio's capacity limiter, cancel scopes and run variables, which cost as much as the
handler of a small request (profiled under load: a fifth of the server's CPU for ``GET /patients``).
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: As many as anyio's default limiter allowed: a handler may wait long (a synchronous job, a C-MOVE).
MAX_THREADS = 40

_executor = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="http")


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a worker thread; its result, or its exception."""
    return await asyncio.get_running_loop().run_in_executor(_executor, functools.partial(function, *args))
