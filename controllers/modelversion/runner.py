"""The operator's own tasks for the ModelVersion controller: one per drive (a version's
update, stream watch or rollback; a model's catch-up), kept in Kopf's memo, not in
module state, and started from the watch: the events Kopf replays when it starts are
what resumes every drive after a restart, from what the status and servers report.

Not kopf.daemon: Kopf would put a finalizer on every ModelVersion a daemon runs for, and
deleting a ModelVersion must not wait on the operator. Not a handler that never returns
either: Kopf handlers are for steps that finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

# Backoff of a drive that raised (the API server or a server unreachable): tried again,
# since no new event may come to start it.
RETRY_SECONDS = (1, 2, 5, 10, 30)


class Runner:
    def __init__(self) -> None:
        self._tasks: dict[tuple[str, ...], asyncio.Task] = {}
        self._again: set[tuple[str, ...]] = set()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def lock(self, namespace: str, model: str) -> asyncio.Lock:
        """Held by each pass that acts on the model's servers or versions, so passes of
        its drives (and a user rollback's request) never interleave in this process."""
        return self._locks.setdefault((namespace, model), asyncio.Lock())

    def ensure(self, key: tuple[str, ...], start: Callable[[], Awaitable[None]],
               logger) -> None:
        """Run `start()` for `key` unless it runs already; asked while it runs, run it
        once more after it ends, so a change it may have missed is looked at.

        Called from a Kopf handler: the task inherits its context, which Events need.
        """
        task = self._tasks.get(key)
        if task is not None and not task.done():
            self._again.add(key)
            return
        self._tasks[key] = asyncio.get_running_loop().create_task(
            self._run(key, start, logger), name=f"recop {' '.join(key)}")

    async def _run(self, key: tuple[str, ...], start: Callable[[], Awaitable[None]],
                   logger) -> None:
        failures = 0
        try:
            while True:
                self._again.discard(key)
                try:
                    await start()
                    failures = 0
                except Exception:  # every drive resumes from the status: try it again
                    delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                    failures += 1
                    logger.exception("%s failed; trying again in %ds", " ".join(key), delay)
                    await asyncio.sleep(delay)
                    continue
                if key not in self._again:
                    return
        finally:
            self._tasks.pop(key, None)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
