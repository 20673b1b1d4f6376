"""``ferroflow run`` in a child process that dies with the command, however it dies.

Prefect starts processes of its own (the temporary API server, task-runner workers); a
SIGKILL of the command would leave them running. So ``run`` does its work in a child that
the kernel sends SIGTERM when the command's process ends (Linux ``PR_SET_PDEATHSIG``);
on SIGTERM the child stops as on Ctrl-C, and Prefect stops what it started. SIGTERM and
SIGHUP sent to the command are passed on; the exit code is the child's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from ..workers import sigterm_at_parent_death

CHILD = "FERROFLOW_SUPERVISOR"  # the supervisor's pid, in the child's environment


def is_supervised() -> bool:
    """True in the child (or where the kernel offers no parent-death signal)."""
    return sys.platform != "linux" or os.environ.get(CHILD) == str(os.getppid())


def supervise(argv: list[str], stopped: type[BaseException]) -> int:
    """Run ``ferroflow argv`` in a child that gets SIGTERM when this process ends;
    ``stopped`` is the exception SIGTERM/SIGHUP raise here (passed on to the child)."""
    me = os.getpid()

    def die_with_parent():
        sigterm_at_parent_death()
        if os.getppid() != me:  # the supervisor died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    child = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *argv],
                             env={**os.environ, CHILD: str(me)}, preexec_fn=die_with_parent)
    while True:
        try:
            return child.wait()
        except stopped as exc:
            child.send_signal(exc.args[0])
        except KeyboardInterrupt:  # Ctrl-C reached the child too (same process group)
            pass
