"""Pool status: the monitor that samples the scoreboard, the page formats, the arbiter's listener, ``fcgipool status``.

``monitor`` (PoolMonitor, PoolStatus), ``formats`` (text/json/xml/html/openmetrics), ``listener`` (the arbiter's
FastCGI listener for the status page and ping), ``cli`` (``fcgipool status``), ``address`` (listener addresses).
Nothing is imported here, so the settings (``fcgipool.config_status``) can use ``address`` without the rest.
"""
