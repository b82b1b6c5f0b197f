"""``oma worker``'s shutdown: SIGTERM stops the scheduler cleanly whatever the main thread holds.

The signal handler runs on the main thread between two bytecodes — possibly inside the thread
pool's ``submit()`` while it holds the pool's (non-reentrant) shutdown lock. A handler that
shuts the scheduler down right there deadlocks. The test lands the signal exactly there, in a
child process (a deadlock must not hang the test run), and asserts a clean exit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import concurrent.futures as cf
    import os
    import signal
    from datetime import datetime, timezone

    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler

    from oma.services.worker import run_until_signal

    original = cf.ThreadPoolExecutor._adjust_thread_count
    fired = []


    def adjust(self):
        # called by submit() with the pool's shutdown lock held
        if not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10000):  # the Python-level handler runs in here, lock held
                pass
        original(self)


    cf.ThreadPoolExecutor._adjust_thread_count = adjust
    ran = []
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(2)}, timezone="UTC")
    scheduler.add_job(
        lambda: ran.append(1), "interval", seconds=3600, id="tick",
        next_run_time=datetime.now(timezone.utc),
    )
    run_until_signal(scheduler)
    assert fired, "the job was never submitted"
    print("stopped cleanly", scheduler.state, flush=True)
    """
)


def _run_python(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter (60 s at most); its exit code and output."""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_sigterm_inside_submit_stops_the_scheduler() -> None:
    # The timeout only catches the deadlock; a clean run takes well under a second.
    try:
        done = _run_python(SCRIPT)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the scheduler deadlocked on SIGTERM inside submit()") from exc
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped cleanly 0"


def test_second_signal_and_normal_return_leave_no_thread() -> None:
    script = textwrap.dedent(
        """
        import os
        import signal
        import threading
        from datetime import datetime, timezone

        from apscheduler.schedulers.blocking import BlockingScheduler

        from oma.services.worker import run_until_signal

        scheduler = BlockingScheduler(timezone="UTC")

        def twice():  # from a pool thread, two signals in a row
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)

        # an interval job like the worker's own (a one-shot job is removed by the main loop
        # after its run, which APScheduler refuses once shutdown() has begun elsewhere)
        scheduler.add_job(
            twice, "interval", seconds=3600, next_run_time=datetime.now(timezone.utc), id="twice"
        )
        run_until_signal(scheduler)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        print(sorted(t.name for t in threading.enumerate()), flush=True)
        """
    )
    done = _run_python(script)
    assert done.returncode == 0, done.stderr
    assert "oma-worker-stop" not in done.stdout


def test_signal_before_start_stops_the_scheduler_once_it_runs() -> None:
    # oma worker catches SIGTERM from before its first heartbeat (startup may take a while)
    script = textwrap.dedent(
        """
        import os
        import signal

        from apscheduler.schedulers.blocking import BlockingScheduler

        from oma.services.worker import stop_on_signal

        scheduler = BlockingScheduler(timezone="UTC")
        with stop_on_signal(scheduler):
            os.kill(os.getpid(), signal.SIGTERM)  # still starting up
            scheduler.add_job(lambda: None, "interval", seconds=3600, id="idle")
            scheduler.start()
        print("stopped", scheduler.state, flush=True)
        """
    )
    done = _run_python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped 0"
