"""Pool config for the fault tests: the keeper switched off (each worker forgets it right after fork), to show
what a killed worker costs without it. Never a production setting."""

import dataclasses


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    worker.spawn = dataclasses.replace(worker.spawn, keeper=None)
