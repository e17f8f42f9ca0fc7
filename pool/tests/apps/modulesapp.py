"""Answers with what the worker serving it has imported: one ``name state`` line per module in ``sys.modules``,
state ``loaded``, or ``deferred`` for a lazily imported module whose code has not run (fcgipool.lazyimports).
Imports nothing itself, so the list is the worker's own."""

import sys
import types


def app(environ, start_response):  # type: ignore[no-untyped-def]
    lines = [
        f"{name} {'loaded' if type(module) is types.ModuleType else 'deferred'}"
        for name, module in sorted(sys.modules.items())
    ]
    body = ("\n".join(lines) + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
