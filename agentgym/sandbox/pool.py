"""A pool of pre-started, single-use sandbox workers.

Interpreter start-up dominates the cost of running a short program, so workers are started ahead of
time: each is a complete sandbox (its own namespaces, its own empty /tmp) whose interpreter has booted,
dropped its privileges, set its limits and waits on its stdin for one job. A run takes a worker, sends
the code, collects the result and kills the worker's whole process tree; a background thread meanwhile
starts a replacement. Nothing of one run (files, processes, imported modules, variables) can reach the
next, because no worker ever serves two jobs.

bwrap's default, a fork server (``forkserver.py``), avoids the start-up altogether by giving each
forked job namespaces, mounts and a user of its own; this pool serves the modes that start a whole
interpreter per run (subprocess, and bwrap with ``fork_server=False``).

Workers are started only by the pool's own long-lived thread: bwrap's ``--die-with-parent`` ties a
worker's life to the *thread* that started it, so a worker started by a short-lived caller thread
would be killed when that thread ends.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from abc import abstractmethod
from collections.abc import Callable

from agentgym.sandbox.base import Backend, ExecResult, Limits, SandboxError, Worker, run_job, wait_ready

log = logging.getLogger(__name__)


class WorkerPool:
    """Keeps ``size`` started workers ready; ``acquire`` hands one out (or None if none is ready)."""

    def __init__(self, start: Callable[[], Worker], size: int) -> None:
        if size < 1:
            raise ValueError(f"pool size must be at least 1, got {size}")
        self._start = start
        self.size = size
        self._ready: collections.deque[Worker] = collections.deque()
        self._changed = threading.Condition()
        self._closed = False
        self._owner_pid = os.getpid()
        self.last_error: Exception | None = None
        self._thread = threading.Thread(target=self._keep_filled, name="agentgym-sandbox-pool", daemon=True)
        self._thread.start()

    def acquire(self) -> Worker | None:
        """A pre-started worker, or None if none is ready (the caller then starts its own)."""
        if os.getpid() != self._owner_pid:  # a forked child must not share its parent's workers
            return None
        with self._changed:
            if not self._ready:
                self._changed.notify_all()
                return None
            worker = self._ready.popleft()
            self._changed.notify_all()
            return worker

    def _keep_filled(self) -> None:
        failures = 0
        while True:
            with self._changed:
                while not self._closed and len(self._ready) >= self.size:
                    self._changed.wait()
                if self._closed:
                    return
            try:
                worker = self._start()
                failures = 0
            except Exception as error:  # keep the thread alive; run() reports the error itself
                self.last_error = error
                failures += 1
                log.warning("agentgym sandbox pool: starting a worker failed: %s", error)
                time.sleep(min(5.0, 0.1 * 2**failures))
                continue
            with self._changed:
                if self._closed:
                    worker.close()
                    return
                self._ready.append(worker)

    def close(self) -> None:
        """Kill the idle workers and stop the filling thread."""
        if os.getpid() != self._owner_pid:
            return  # the workers belong to the parent process
        with self._changed:
            self._closed = True
            idle = list(self._ready)
            self._ready.clear()
            self._changed.notify_all()
        for worker in idle:
            worker.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)


class PooledBackend(Backend):
    """A backend whose runs use single-use workers (``start``), pre-started by a pool if ``pool_size`` > 0."""

    signal_exit_offset = False  # True if the worker reports death by signal N as exit status 128 + N

    def __init__(self, limits: Limits, pool_size: int) -> None:
        super().__init__(limits)
        self.pool_size = pool_size
        self._pool: WorkerPool | None = None
        if pool_size > 0:
            self._pool = WorkerPool(lambda: self.start(limits.timeout), pool_size)

    @abstractmethod
    def start(self, timeout: float) -> Worker:
        """Start one worker: a sandboxed runner waiting for its job."""

    def run(self, code: str, stdin: str = "", timeout: float | None = None) -> ExecResult:
        timeout = self.limits.timeout if timeout is None else timeout
        # Pooled workers were limited for the default timeout; a run given more time gets a fresh
        # worker, so that its CPU-time limit matches.
        fits = self.limits.cpu_limit(timeout) <= self.limits.cpu_limit(self.limits.timeout)
        worker = self._pool.acquire() if self._pool is not None and fits else None
        if worker is not None:
            try:
                wait_ready(worker)
            except SandboxError:
                worker = None  # it died while idle; start a fresh one
        if worker is None:
            worker = self.start(timeout)
            wait_ready(worker)
        return run_job(worker, code, stdin, timeout, self.limits, self.name, self.signal_exit_offset)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
