"""The stack's pool config: the production config (pool/gunicorn.conf.py) plus the sample app's lost-task hook.

Used by both docker and native mode (`fcgipool --config app/pool.conf.py ...`), so neither forks the config
users copy. Override the base with FCGIPOOL_BASE_CONFIG.
"""

import os
import runpy

_base = os.environ.get("FCGIPOOL_BASE_CONFIG") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), os.pardir, "pool", "gunicorn.conf.py"
)
globals().update({k: v for k, v in runpy.run_path(_base).items() if not k.startswith("__")})

from sampleapp.hooks import on_task_lost, on_task_spilled  # noqa: E402,F401  (the pool reads these by name)
