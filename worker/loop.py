"""The event loop the worker's processes run on: uvloop where it is installed (Linux).

uvloop runs the same asyncio code with its transports and scheduling in C; on the speak path
it is the cheapest lever on the cost of each socket write and callback (see bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def use_uvloop() -> bool:
    """Make `asyncio.run` use uvloop from now on; False (asyncio's own loop) without it."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop when available, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
