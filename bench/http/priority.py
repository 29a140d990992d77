"""The niceness of the measured processes (`--nice`): gunicorn, wrk and the hashing processes
each apply it to themselves, in a session of their own, so that on a machine shared with other
work the benchmark's processes keep the CPU they need and the figures stay comparable.
"""

from __future__ import annotations

import contextlib
import os

from tests.support.throwaway import die_with_parent

# Niceness for the measured processes (--nice). Linux with autogroup scheduling shares the CPU
# between sessions first and applies niceness only inside a session, so each measured process
# (gunicorn, wrk, the hashers) gets a session of its own whose autogroup niceness is set too.
PRIORITY = {"nice": 0}


def prioritize_self() -> None:
    """In a child: take the benchmark's niceness for this process and its own session's group."""
    nice = PRIORITY["nice"]
    if not nice:
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as group:
        group.write(str(nice))


def child_setup() -> None:
    """In the child before exec (new session already): die with the benchmark, take priority."""
    die_with_parent()
    prioritize_self()
