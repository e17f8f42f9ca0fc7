#!/bin/sh
# Render the shared nginx template for the container, then run nginx in the foreground (PID 1).
set -eu
log_dir=$(dirname "$NGINX_ACCESS_LOG")
if ! touch "$NGINX_ACCESS_LOG" 2>/dev/null; then
    # A bind-mounted log folder the www-data user cannot write (make up prepares it; a bare compose up may not).
    echo "nginx-entrypoint: cannot write $NGINX_ACCESS_LOG ($log_dir: not writable by $(id -un), or a read-only file system); logging to stdout" >&2
    NGINX_ACCESS_LOG=/dev/stdout
    export NGINX_ACCESS_LOG
fi
mkdir -p "$NGINX_RUN_DIR"
"$NGINX_CONF_DIR/render.sh" "$NGINX_RUN_DIR/nginx.conf"
exec nginx -c "$NGINX_RUN_DIR/nginx.conf" -e "$NGINX_ERROR_LOG" -g "daemon off;"
