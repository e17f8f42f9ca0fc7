"""The fault suite against PHP-FPM, for comparison (docs/reliability.md): nginx + php-fpm8.2 + a small PHP app.

Self-contained: it starts its own nginx (127.0.0.1, a free port, config and pid/temp files in a temp dir) in
front of its own php-fpm (pm static, as many children as the stack has workers), runs each fault under a
bounded POST load, and returns one measured-only :class:`~loadtest.faults.table.FaultRow` per fault and nginx
variant: ``php-fpm (keep-conn)`` (fastcgi_keep_conn on + upstream keepalive, as nginx/nginx.conf.template) and
``php-fpm (no keep-conn)`` (the common php-fpm set-up). Both keep nginx's default ``fastcgi_next_upstream error
timeout``. Without php-fpm8.2 or nginx it raises ``Unavailable`` saying what to install; it never installs.

The faults (``--only`` names): reload and reload-pct (SIGUSR2 x3, process_control_timeout 0 = Debian's default,
and 10 s), kill9 (kill -9 of a busy child x3), terminate (a 5 s GET and POST past request_terminate_timeout
= 3 s), term, quit and quit-pct (the master stopped with after-response work in flight), silent (100 connections
to the FPM socket that send nothing) and recycle (pm.max_requests = 50). The load and the replay count are the
fcgipool rows' own (loadtest/faults/load.py, accounting.py); after-response work is app.php's ledger file.

    python -m loadtest.faults.phpfpm [--short] [--out DIR]
"""

from loadtest.faults.phpfpm.runner import run
from loadtest.faults.phpfpm.stack import Unavailable, missing

__all__ = ["Unavailable", "missing", "run"]
