"""Production config for the fcgipool worker pool: ``fcgipool -c pool/gunicorn.conf.py myapp:app``.

Copy it. Every setting here differs from its default (or is spelled out because it matters), and says why.
Override without editing: the fcgipool settings by their own environment variables (FCGIPOOL_BACKGROUND_TIMEOUT,
... see docs/settings.md; they take precedence over this file), the gunicorn ones by the FCGIPOOL_* variable
read on their line. Command-line flags override both.
"""

import multiprocessing
import os


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


# --- where nginx connects --------------------------------------------------------------------------------
# A unix socket: no TCP handshake per connection, and access is controlled by file permissions.
bind = _env("FCGIPOOL_BIND", "unix:/run/fcgipool/pool.sock")
# Socket files 0660 (0777 & ~0117): nginx reaches them through the shared group, nobody else can. gunicorn
# applies this mask only while binding sockets and creating its heartbeat files, never to the app's files.
umask = int(_env("FCGIPOOL_UMASK", "0o117"), 0)

# --- workers ---------------------------------------------------------------------------------------------
# One request at a time per worker, and a worker stays busy while its after-response work runs: start at
# two per core and size from `make loadtest` (docs/loadtest.md, "The sizing model") rather than from CPU count alone.
workers = int(_env("FCGIPOOL_WORKERS", str(2 * multiprocessing.cpu_count())))
# The response phase limit (PHP-FPM's request_terminate_timeout): a request still running after this many
# seconds is interrupted and answered 504 by its worker (killed kill_grace later only if the app ignores that).
# After-response work has its own budget (background_timeout).
timeout = int(_env("FCGIPOOL_TIMEOUT", "30"))
# Stop/reload: running after-response work gets this long to finish; what cannot is reported lost. Keep it
# below your supervisor's kill timeout (compose stop_grace_period 45 s, supervisord stopwaitsecs 40).
graceful_timeout = int(_env("FCGIPOOL_GRACEFUL_TIMEOUT", "30"))
# Recycle workers now and then so a slow leak in application code cannot grow without bound; the jitter
# keeps them from restarting all at once. A recycled worker finishes its after-response work first.
max_requests = int(_env("FCGIPOOL_MAX_REQUESTS", "5000"))
max_requests_jitter = int(_env("FCGIPOOL_MAX_REQUESTS_JITTER", "500"))
# Heartbeat files in memory, not on the container's overlay disk (gunicorn's advice for containers).
worker_tmp_dir = _env("FCGIPOOL_WORKER_TMP_DIR", "/dev/shm" if os.path.isdir("/dev/shm") else "") or None
# Show up as "fcgipool" in ps/top.
proc_name = _env("FCGIPOOL_PROC_NAME", "fcgipool")

# --- logs ------------------------------------------------------------------------------------------------
# To stderr, for the container runtime or supervisord to collect. No access log: nginx writes it.
errorlog = "-"
loglevel = _env("FCGIPOOL_LOG_LEVEL", "info")
# gunicorn's control socket next to the pool socket, not in $HOME (shared by every pool, often unwritable).
control_socket = _env("FCGIPOOL_CONTROL_SOCKET", "/run/fcgipool/gunicorn.ctl")

# --- fcgipool (each also has an FCGIPOOL_* environment variable that overrides this file) -----------------
# Total time one request's after-response work may take; then it is interrupted and reported lost.
background_timeout = 30
# SIGABRT this long after a missed limit, SIGKILL as long again: enough to unwind, short enough to free the slot.
kill_grace = 2
# A fast leak is bounded by size, not only by max_requests: a worker past 512 MiB RSS is recycled gracefully
# (a healthy worker of the sample app uses 30-40 MiB; set it from your status page's "memory rss").
max_worker_memory = 512
# Reuse nginx's connections (fastcgi_keep_conn on + upstream keepalive): saves a connect/accept per request.
keep_conn = "allow"
# A busy worker passes its idle kept connections to an idle worker after this long: under load connections
# stay put (no hand-over cost), and a request sent on one never waits longer than this behind a busy worker.
handoff_after = 0.005
# A request body above nginx's client_max_body_size never reaches us; this is the backstop for other clients.
max_body_size = "16m"
# CGI variables and headers; nginx's own header limits keep real requests far below this.
max_params_size = "256k"
# A response up to this size leaves in one write, together with the end of the request.
output_buffer_size = "256k"
