"""`make bench`: hello world through one nginx, side by side, fcgipool vs other WSGI/FastCGI servers."""
