"""Running a coroutine from a synchronous test, with a deadline so that a hang fails the test."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], *, deadline: float = 20.0) -> T:
    """Runs `coro` under ``asyncio.run``; a `coro` still going after `deadline` seconds fails."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, deadline)

    return asyncio.run(bounded())
