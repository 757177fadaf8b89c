"""Stopping signals: SIGTERM and the pre-emption warning raise `Terminated` where the job is.

`stopping_signals()` is in place while a job's run is open (`run.job.run_job`):

* SIGTERM (a cancelled or pre-empted job, `kill`) raises `Terminated`.
* The pre-emption warning, SIGUSR2 unless `SUBMITIT_PREEMPT_SIGNAL` names another
  (what Slurm sends before the time limit, `--signal=USR2@...`): when a handler was
  already installed (submitit's `checkpoint_and_try_requeue`: it requeues the job and
  then raises `SystemExit(-1)`, or raises `UncompletedJobError` when it will not
  requeue), that handler runs first and what it raises is kept in `Terminated.then`,
  for the job to re-raise once its run is closed; with no handler, it is a SIGTERM.

After the first, further stopping signals are noted and ignored, so closing the run
and keeping the checkpoint cannot be cut short by the SIGTERM Slurm sends next.
No TensorFlow here: the job installs these before anything heavy runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

PREEMPT_ENV = "SUBMITIT_PREEMPT_SIGNAL"  # submitit's own variable, same default


class Terminated(BaseException):
    """A stopping signal, raised where the job is so that its run can close.

    `signal_name` is the signal's name (`SIGTERM`, `SIGUSR2`); `then` is what a
    handler installed before ours (submitit's) raised, re-raised after the run closes.
    """

    def __init__(
        self, message: str, signal_name: str = "", then: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.then = then

    @property
    def requeued(self) -> bool:
        """submitit requeued the job (it exits with SystemExit after `scontrol requeue`)."""
        return isinstance(self.then, SystemExit)

    def reason(self) -> str:
        """What the run's `error` tag says, before the checkpoint's part."""
        name = self.signal_name or "a signal"
        if self.signal_name and self.signal_name != "SIGTERM" and self.then is not None:
            if self.requeued:
                return f"killed by signal {name} (pre-emption warning): the job is requeued"
            return f"killed by signal {name} (pre-emption warning): {self.then}"
        return f"killed by signal {name}"


def preempt_signal() -> signal.Signals | None:
    """The pre-emption warning's signal, as submitit reads it; None where the OS has none."""
    name = os.environ.get(PREEMPT_ENV, "USR2")
    return getattr(signal, f"SIG{name}", getattr(signal, name, None))


class _State:
    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.fired = False


@contextlib.contextmanager
def stopping_signals() -> Iterator[None]:
    """SIGTERM and the pre-emption signal raise `Terminated` inside; the caller's handlers
    are back afterwards. Outside the main thread (no handler can be set) it does nothing."""
    state = _State()
    wanted = [s for s in (signal.SIGTERM, preempt_signal()) if s is not None]

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if state.fired:  # already stopping: let the run close
            log.warning("%s ignored: the job is already stopping", name)
            return
        previous = state.previous.get(signum)
        if signum != signal.SIGTERM and callable(previous):
            state.fired = True
            try:
                previous(signum, frame)  # submitit: dump the job, requeue it, then exit
            except BaseException as err:
                raise Terminated(f"signal {signum}", name, then=err) from None
            state.fired = False  # the handler chose to carry on (submitit: not rank 0)
            return
        if signum != signal.SIGTERM and previous == signal.SIG_IGN:
            return
        state.fired = True
        raise Terminated(f"signal {signum}", name)

    for signum in wanted:
        with contextlib.suppress(ValueError):  # not the main thread
            state.previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, previous in state.previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
