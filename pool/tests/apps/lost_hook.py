"""gunicorn config file for tests: record every lost task as a JSON line in $BGAPP_DIR/lost.log."""

import json
import os


def on_task_lost(server, task):  # type: ignore[no-untyped-def]
    line = json.dumps(
        {
            "name": task.name,
            "reason": task.reason,
            "uri": task.request_uri,
            "pid": task.pid,
            "started": task.started,
            "by": type(server).__name__,
        }
    )
    with open(os.path.join(os.environ["BGAPP_DIR"], "lost.log"), "a") as f:
        f.write(line + "\n")
