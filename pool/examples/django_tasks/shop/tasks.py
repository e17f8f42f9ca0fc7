"""The example's tasks. Each records its side effect as a JSON line in $SHOP_DATA_DIR/<kind>.log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

try:
    from django.tasks import task  # Django >= 6.0
    from django.tasks.signals import task_finished
except ImportError:
    from django_tasks import task  # the backport (Django 4.2 - 5.2)
    from django_tasks.signals import task_finished


def data_dir() -> Path:
    path = Path(os.environ.get("SHOP_DATA_DIR", "/tmp/fcgipool-django-example"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def where() -> str:
    """"queue" inside an RQ job (the task spilled: docs/spill.md), else "pool"."""
    try:
        from rq import get_current_job
    except ImportError:
        return "pool"
    return "queue" if get_current_job() is not None else "pool"


def record(kind: str, **data: Any) -> None:
    line = json.dumps({"t": time.time(), "pid": os.getpid(), "where": where(), **data})
    with open(data_dir() / f"{kind}.log", "a") as f:
        f.write(line + "\n")


@task()
def send_receipt(order_id: str, email: str, ms: int) -> dict[str, str]:
    started = time.time()
    time.sleep(ms / 1000)  # stands in for the SMTP conversation
    record("receipt", order_id=order_id, email=email, started=started)
    return {"order_id": order_id, "sent_to": email}


@task()
def build_report(key: str, ms: int) -> None:
    started = time.time()
    time.sleep(ms / 1000)
    record("report", key=key, started=started)


def connect_signals() -> None:
    """Every finished task (successful or failed, also one cut off by the pool's budget) in finished.log."""

    def finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
        record("finished", id=task_result.id, task=task_result.task.module_path, status=str(task_result.status),
               errors=[e.exception_class_path for e in task_result.errors], args=task_result.args)  # fmt: skip

    task_finished.connect(finished, weak=False, dispatch_uid="shop.finished")
