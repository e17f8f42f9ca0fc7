"""fcgipool config of the example: every lost task -- a task cut off by --background-timeout, one that never
started, one lost at shutdown -- becomes a JSON line in $SHOP_DATA_DIR/lost.log. The task's name is its module
path (shop.tasks.build_report). Production settings: start from pool/gunicorn.conf.py."""

import json
import os
import time


def on_task_lost(server, task):  # type: ignore[no-untyped-def]
    line = {"name": task.name, "reason": task.reason, "started": task.started, "uri": task.request_uri,
            "pid": task.pid, "t": time.time()}  # fmt: skip
    with open(os.path.join(os.environ.get("SHOP_DATA_DIR", "/tmp/fcgipool-django-example"), "lost.log"), "a") as f:
        f.write(json.dumps(line) + "\n")
