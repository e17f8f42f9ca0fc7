"""flup's prefork FastCGI server on a unix socket: `python flup_server.py SOCKET WORKERS`."""

import sys

from flup.server.fcgi_fork import WSGIServer
from hello import app


def main() -> None:
    socket_path, workers = sys.argv[1], int(sys.argv[2])
    # A fixed pool: as many children as the other servers' workers, never more, never fewer.
    server = WSGIServer(app, bindAddress=socket_path, umask=0, minSpare=workers, maxSpare=workers, maxChildren=workers)
    server.run()


if __name__ == "__main__":
    main()
