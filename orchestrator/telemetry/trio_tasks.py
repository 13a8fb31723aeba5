"""How many Trio tasks are alive in this process's run: with no call in progress the count is constant, so a
count that grows from one idle moment to the next is a leak (the soak benchmark reads it)."""
from __future__ import annotations

import trio


def live_trio_tasks() -> int:
    """Every task of the current Trio run, the root task included. Call from inside the run."""
    count, tasks = 0, [trio.lowlevel.current_root_task()]
    while tasks:
        task = tasks.pop()
        count += 1
        tasks += [child for nursery in task.child_nurseries for child in nursery.child_tasks]
    return count
