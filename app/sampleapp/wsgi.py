"""WSGI entry point: `fcgipool ... sampleapp.wsgi:app` (or any WSGI server)."""

from fcgipool import background

from sampleapp import create_app

# Under fcgipool the middleware passes through; under other servers it runs tasks when the response closes.
app = background.wsgi(create_app())
