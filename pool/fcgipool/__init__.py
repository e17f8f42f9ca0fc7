"""fcgipool: a gunicorn FastCGI worker pool that runs work after the response has reached the client."""

from . import background

__all__ = ["background"]
__version__ = "0.1.0"
