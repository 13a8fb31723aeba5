"""One edge-triggered epoll for every plain socket's reads in a Trio run.

A socket is registered once; Trio's own `wait_readable` re-arms a one-shot registration (an `epoll_ctl`) on
every wait, which is a sixth of the cost of a message (`benchmarks/websocket_stacks/README.md`, variant h).
The reactor's task waits on the epoll's fd and wakes the tasks whose sockets became readable, or, when a
socket has a fast path installed, calls it instead (`connection.WebSocket.take_messages`).

Every socket of the run shares this task, so a fast path must not take it down or hold it up: one that
raises fails only its own socket's task (with that error), and one that takes longer than
FAST_PATH_BUDGET_S on FAST_PATH_STRIKES calls in a row loses its fast path (its task reads its messages from
then on). One call alone is not enough: on a loaded machine the OS preempts the reactor inside a fast path
now and then, which the clock cannot tell from a slow handler; a slow handler is slow every time.

Nor may a fault of the reactor's own: an exception anywhere in its loop fails the task of the socket it
was handling then (if any), and the reactor starts again on a new epoll with every socket registered anew
and every waiting task woken to look at its socket (an edge taken but not handled is not lost; a wake for
nothing costs a failed read). A reactor that faults more than MAX_FAULTS times within FAULT_WINDOW_S
retires: every socket then waits with Trio's own `wait_readable` and reads in its task (no fast path).
"""

from __future__ import annotations

import logging
import select
import time
from collections import deque
from collections.abc import Callable

import outcome
import trio

__all__ = ["FAST_PATH_BUDGET_S", "FAST_PATH_STRIKES", "FAULT_WINDOW_S", "MAX_FAULTS", "ReadReactor", "read_reactor"]

log = logging.getLogger(__name__)

FAST_PATH_BUDGET_S = 0.005  # a 20 ms audio frame's worth of work for every other socket, at most a quarter
FAST_PATH_STRIKES = 2
# A reactor that faults this often is broken, not unlucky: the sockets stop relying on it.
MAX_FAULTS = 5
FAULT_WINDOW_S = 60.0

_FLAGS = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET if hasattr(select, "epoll") else 0

HANG_UP_FLAGS = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR if hasattr(select, "epoll") else 0
_READ_REACTOR: trio.lowlevel.RunVar[ReadReactor] = trio.lowlevel.RunVar("websocket_read_reactor")


class ReadReactor:
    """Wakes the task that waits for a socket's data, or calls the socket's fast path instead."""

    _BATCH = 512

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._registered: set[int] = set()
        self._waiting: dict[int, trio.lowlevel.Task] = {}
        # Sockets with an edge since their task last looked: data may wait (or a spurious wake, harmless).
        self._ready: set[int] = set()
        # Sockets the peer closed or reset: readable for good. A read returns the data before the end of
        # the stream, and no new edge comes for the end that is still pending, so it must not be waited for.
        self._hung_up: set[int] = set()
        # Called when a socket whose task waits becomes readable; True: handled, the task keeps waiting.
        self._fast_paths: dict[int, Callable[[], bool]] = {}
        self._over_budget: dict[int, int] = {}  # sockets whose last fast path calls overran: how many in a row
        self._handling: int | None = None  # the socket whose event the loop is handling: a fault there is its
        self._faults: deque[float] = deque()
        self.retired = False  # faulted too often: sockets wait with Trio's own wait_readable

    def set_fast_path(self, fd: int, on_readable: Callable[[], bool] | None) -> None:
        if on_readable is None or self.retired:
            self._fast_paths.pop(fd, None)
        else:
            self._fast_paths[fd] = on_readable

    def register(self, fd: int) -> None:
        self._registered.add(fd)
        if self.retired:
            return
        try:
            self._epoll.register(fd, _FLAGS)
        except FileExistsError:  # a closed socket's number, reused before epoll dropped it
            self._epoll.modify(fd, _FLAGS)
        self._ready.add(fd)

    def hung_up(self, fd: int) -> bool:
        return fd in self._hung_up

    def unregister(self, fd: int) -> None:
        """Before the socket closes (its number may be reused at once); its waiting task gets
        ClosedResourceError, as `trio.lowlevel.notify_closing` would give it."""
        self._registered.discard(fd)
        self._ready.discard(fd)
        self._hung_up.discard(fd)
        self._fast_paths.pop(fd, None)
        self._over_budget.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        task = self._waiting.pop(fd, None)
        if task is not None:
            trio.lowlevel.reschedule(task, outcome.Error(trio.ClosedResourceError("the socket was closed")))

    async def wait_readable(self, fd: int) -> None:
        if self.retired:
            await trio.lowlevel.wait_readable(fd)
            return
        ready = self._ready
        if fd in self._hung_up:
            await trio.lowlevel.checkpoint()
            return
        if fd in ready:
            await trio.lowlevel.checkpoint()
            ready.discard(fd)  # after the checkpoint: the read that follows sees any data that came meanwhile
            return
        waiting = self._waiting
        waiting[fd] = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            waiting.pop(fd, None)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self) -> None:
        try:
            while not self.retired:
                try:
                    await self._serve()
                except Exception as error:  # the reactor's own fault: see the module docstring
                    self._recover(error)
        finally:
            self._epoll.close()

    async def _serve(self) -> None:
        epoll, waiting, ready, fast_paths = self._epoll, self._waiting, self._ready, self._fast_paths
        hung_up = self._hung_up
        reschedule = trio.lowlevel.reschedule
        while True:
            await trio.lowlevel.wait_readable(epoll.fileno())
            while True:
                events = epoll.poll(0, self._BATCH)
                for fd, flags in events:
                    self._handling = fd
                    if flags & HANG_UP_FLAGS:
                        hung_up.add(fd)
                    task = waiting.get(fd)
                    if task is None:
                        ready.add(fd)
                        continue
                    on_readable = fast_paths.get(fd)
                    if on_readable is not None and self._run_fast_path(fd, on_readable, task):
                        continue
                    # The fast path may have closed the socket (and woken the task) already.
                    if waiting.get(fd) is task:
                        del waiting[fd]
                        reschedule(task)
                self._handling = None
                if len(events) < self._BATCH:
                    break

    def _recover(self, error: Exception) -> None:
        """After a fault of the loop: the socket it was handling fails with `error`; every other socket is
        looked at again, on a new epoll (or with Trio's waits once the reactor retires)."""
        faulty, self._handling = self._handling, None
        log.error("the read reactor failed (%r) while handling socket %s; it starts again", error, faulty,
                  exc_info=error)
        if faulty is not None:
            self._fast_paths.pop(faulty, None)
            task = self._waiting.pop(faulty, None)
            if task is not None:
                trio.lowlevel.reschedule(task, outcome.Error(error))
        now = time.monotonic()
        self._faults.append(now)
        while self._faults[0] < now - FAULT_WINDOW_S:
            self._faults.popleft()
        self._epoll.close()
        self._epoll = select.epoll()
        if len(self._faults) > MAX_FAULTS:
            log.critical("the read reactor faulted %d times in %g s: it retires, sockets read in their tasks",
                         len(self._faults), FAULT_WINDOW_S)
            self.retired = True
            self._fast_paths.clear()
            self._hung_up.clear()
        for fd in list(self._registered):
            if not self.retired:
                try:
                    self._epoll.register(fd, _FLAGS)  # readable now: reported at once
                except OSError:  # closed without unregister: nothing to read
                    self._registered.discard(fd)
                    continue
            self._ready.add(fd)
        for task in self._waiting.values():
            trio.lowlevel.reschedule(task)  # to look at its socket (a wake for nothing costs a failed read)
        self._waiting.clear()

    def _run_fast_path(self, fd: int, on_readable: Callable[[], bool], task: trio.lowlevel.Task) -> bool:
        """The socket's fast path, kept within its budget; True: handled, the task keeps waiting."""
        started = time.perf_counter()
        try:
            handled = on_readable()
        except Exception as error:  # the socket's task fails with it; the reactor serves the others
            log.exception("a socket's fast path failed; its task gets the error")
            self._fast_paths.pop(fd, None)
            if self._waiting.get(fd) is task:
                del self._waiting[fd]
                trio.lowlevel.reschedule(task, outcome.Error(error))
            return True
        elapsed = time.perf_counter() - started
        over_budget = self._over_budget
        if elapsed > FAST_PATH_BUDGET_S:
            strikes = over_budget.get(fd, 0) + 1
            if strikes < FAST_PATH_STRIKES:
                over_budget[fd] = strikes
            else:
                log.warning("a socket's fast path took %.1f ms, %d calls in a row over its budget; its task reads it "
                            "from now on", elapsed * 1000, strikes)
                self._fast_paths.pop(fd, None)
                del over_budget[fd]
        elif over_budget:
            over_budget.pop(fd, None)
        return handled


def read_reactor() -> ReadReactor | None:
    """This run's reactor, started on first use; None where there is no epoll or once it retired (Trio's
    waits then)."""
    if not hasattr(select, "epoll"):
        return None
    try:
        reactor = _READ_REACTOR.get()
        return None if reactor.retired else reactor
    except LookupError:
        reactor = ReadReactor()
        trio.lowlevel.spawn_system_task(reactor.run, name="websocket read reactor")
        _READ_REACTOR.set(reactor)
        return reactor
