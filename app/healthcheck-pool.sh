#!/bin/sh
# Pool healthcheck: a real FastCGI request (cgi-fcgi) to the arbiter's status listener must answer "pong".
set -eu
sock=${FCGIPOOL_STATUS_SOCKET:-/run/fcgipool/status.sock}
out=$(env -i REQUEST_METHOD=GET SCRIPT_NAME=/pool-ping DOCUMENT_URI=/pool-ping REQUEST_URI=/pool-ping \
      SERVER_PROTOCOL=HTTP/1.1 cgi-fcgi -bind -connect "$sock" 2>&1) || { echo "no answer on $sock: $out"; exit 1; }
case "$out" in
    *pong*) exit 0 ;;
    *) echo "unexpected answer from $sock: $out"; exit 1 ;;
esac
