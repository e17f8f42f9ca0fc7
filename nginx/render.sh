#!/bin/sh
# Render nginx.conf.template into a runnable config (docker entrypoint and native mode use this same script).
# Usage: render.sh OUTPUT_FILE   — reads the NGINX_* / FCGIPOOL_* variables below from the environment
# (NGINX_USER optional: the workers' user when nginx is started as root).
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
out=${1:?usage: render.sh OUTPUT_FILE}
: "${NGINX_CONF_DIR:=$here}"
: "${NGINX_LISTEN:=127.0.0.1:8080}"
: "${NGINX_RUN_DIR:?set NGINX_RUN_DIR (pid and temp files)}"
: "${NGINX_ERROR_LOG:?set NGINX_ERROR_LOG (a file or /dev/stderr)}"
: "${NGINX_ACCESS_LOG:?set NGINX_ACCESS_LOG (the JSON access log the load tests read)}"
: "${FCGIPOOL_SOCKET:?set FCGIPOOL_SOCKET (the pool socket path)}"
: "${FCGIPOOL_STATUS_SOCKET:?set FCGIPOOL_STATUS_SOCKET (the status listener socket path)}"
export NGINX_CONF_DIR NGINX_LISTEN NGINX_RUN_DIR NGINX_ERROR_LOG NGINX_ACCESS_LOG FCGIPOOL_SOCKET FCGIPOOL_STATUS_SOCKET
command -v envsubst >/dev/null 2>&1 || {
    echo "render.sh: envsubst not found; install it: apt-get install gettext-base" >&2; exit 1; }
mkdir -p "$NGINX_RUN_DIR"
{
    # Only when nginx starts as root (native mode run by root): which user its workers run as.
    if [ -n "${NGINX_USER:-}" ]; then echo "user ${NGINX_USER};"; fi
    # Only our placeholders: nginx's own $variables must pass through untouched.
    envsubst '${NGINX_CONF_DIR} ${NGINX_LISTEN} ${NGINX_RUN_DIR} ${NGINX_ERROR_LOG} ${NGINX_ACCESS_LOG} ${FCGIPOOL_SOCKET} ${FCGIPOOL_STATUS_SOCKET}' \
        < "$here/nginx.conf.template"
} > "$out.tmp"
mv "$out.tmp" "$out"
