"""Running a coroutine to completion without being held hostage by misbehaving work.

``asyncio.run`` cancels leftover tasks and then waits for them, and waits for the default
executor's threads: one check stuck in a blocking call, or one that swallows its
cancellation, would keep ``agentd check`` alive long after its report was printed. Here
leftovers get a short grace period and are then abandoned; :data:`abandoned` tells the
CLI to end the process without joining the stuck threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")

abandoned = False
"""True once some work was left behind (the process should exit with os._exit)."""


def run(main: Coroutine[Any, Any, T], *, grace_s: float = 1.0) -> T:
    global abandoned
    loop = asyncio.new_event_loop()
    executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="agentd")
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                _, still = loop.run_until_complete(asyncio.wait(pending, timeout=grace_s))
                if still:
                    abandoned = True
            loop.run_until_complete(loop.shutdown_asyncgens())
            executor.shutdown(wait=False, cancel_futures=True)
            if _executor_has_running_work(executor):
                abandoned = True
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _executor_has_running_work(executor: concurrent.futures.ThreadPoolExecutor) -> bool:
    # idle worker threads wait on the queue; a thread that has not taken its exit
    # sentinel within a moment is still running submitted work
    for thread in list(getattr(executor, "_threads", ())):
        thread.join(timeout=0.05)
        if thread.is_alive():
            return True
    return False
