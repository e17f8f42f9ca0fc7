"""gunicorn config file for tests: like lost_hook.py, plus the calling process, and a hook that hangs in the worker.

Each call is one JSON line in $BGAPP_DIR/lost.log. Called in the worker for the task the background timeout
interrupted, the hook sleeps $SLOW_HOOK_SECONDS (far past kill_grace), so the arbiter kills the worker mid-hook;
a line with "returned" is written only if the sleep ever ends.
"""

import json
import os
import time


def _record(server, task, **extra):  # type: ignore[no-untyped-def]
    line = json.dumps(
        {
            "name": task.name,
            "reason": task.reason,
            "uri": task.request_uri,
            "pid": task.pid,
            "started": task.started,
            "by": type(server).__name__,
            "process": os.getpid(),
            **extra,
        }
    )
    with open(os.path.join(os.environ["BGAPP_DIR"], "lost.log"), "a") as f:
        f.write(line + "\n")


def on_task_lost(server, task):  # type: ignore[no-untyped-def]
    _record(server, task)
    if type(server).__name__ == "FastCGIWorker" and task.started:
        time.sleep(float(os.environ.get("SLOW_HOOK_SECONDS", "60")))
        _record(server, task, returned=True)
