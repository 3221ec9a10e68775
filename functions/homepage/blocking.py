"""Blocking adapters (SQLite, the Tablestore SDK, the in-process bus) called from the event loop.

Each call runs on a bounded pool of threads, never on the loop, so a slow store read holds
one pool thread while the loop keeps serving everything else. The caller's context variables
(the current trace span) go with the call.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class BlockingCalls:
    """A fixed number of threads for blocking calls; callers beyond it wait their turn (not the loop)."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError("the blocking-call pool needs at least one thread")
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="barrage-blocking")

    async def run(self, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        call = functools.partial(context.run, function, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
