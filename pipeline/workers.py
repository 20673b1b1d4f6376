"""Process pools whose workers never outlive the command that started them.

A killed parent (SIGKILL, a crash) leaves no stray workers: on Linux the kernel sends
each worker SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and everywhere a
watchdog thread in each worker exits once its parent is gone (the parent pid changes).
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from .errors import WorkerLost

PR_SET_PDEATHSIG = 1
WATCH_S = 0.5


@contextmanager
def parent_objects_frozen():
    """Fork workers in here (a fork pool starts every worker at its first submit): the
    parent's Python objects are out of the garbage collector's reach in the workers, so
    their collections never write to (and so copy) every page holding one. That copying
    cost each worker 0.1-0.2 s of its first partition in a 2,000-series fit."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()  # the parent collects them again; the forked workers keep them frozen


@contextmanager
def workers_lost_explained(what: str):
    """A pool whose worker died (SIGKILL, the out-of-memory killer) raises BrokenProcessPool
    with Python's words; this says what stopped, and what to try, in one line."""
    try:
        yield
    except BrokenProcessPool as exc:
        raise WorkerLost(f"a {what} worker process ended abruptly (killed by a signal, or by the "
                         f"out-of-memory killer): the {what} stopped and kept nothing; run it "
                         "again (fewer --workers need less memory)") from exc


def process_pool(workers: int) -> ProcessPoolExecutor:
    # PDEATHSIG fires when the *thread* that forked dies; only the main thread lives as
    # long as the process, so elsewhere (Prefect task threads) the watchdog alone serves
    main = threading.current_thread() is threading.main_thread()
    return ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent,
                               initargs=(os.getpid(), main))


def _die_with_parent(parent: int, use_prctl: bool) -> None:
    # a forked worker inherits the command's SIGTERM handler (raise, unwind); a worker
    # must simply die on it, as on the death signal below
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    if use_prctl:
        sigterm_at_parent_death()  # where there is none, the watchdog still serves
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="parent-watchdog").start()


def sigterm_at_parent_death() -> None:
    """Have the kernel send this process SIGTERM when the thread that started it ends
    (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere nothing). The caller checks afterwards
    that its parent is still the one it expects: a parent that died before the call
    sends nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl in this libc


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_S)
    os._exit(1)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_HEAP_KEPT = False


def keep_freed_arrays() -> None:
    """Let this process's heap keep freed blocks up to 64 MiB (Linux, glibc).

    By default glibc maps every block over 128 KiB afresh and unmaps it when freed, so
    each temporary array of a batched fit (about 1 MiB) costs its page faults again; kept
    in the heap, they are reused. Once per process; elsewhere a no-op."""
    global _HEAP_KEPT
    if _HEAP_KEPT or not sys.platform.startswith("linux"):
        return
    _HEAP_KEPT = True
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):
        pass  # not glibc: its own allocator's defaults
