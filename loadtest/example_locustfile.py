"""An example of your own load-test scenarios: `make loadtest TARGET=http://host:port LOCUSTFILE=this file`.

The contract (docs/loadtest.md, "Bring your own app"), in short:

* each non-abstract HttpUser / FastHttpUser class is one scenario, named by the class (`SCENARIOS=Shopper`);
* each run of one of its @task methods is one arrival: the open-loop driver starts tasks at Poisson times on
  one instance of the class, each in its own greenlet, and sets the rate itself (`wait_time` is ignored);
  so keep per-visit state in local variables, not on `self`;
* every request sent through `self.client` is measured; the first request of a task counts its latency from
  the task's intended start, so a pool that stalls cannot hide its queue;
* optional: `fcgipool_loads` (the stable steps, as fractions of the measured capacity), `fcgipool_overload`
  (the step past capacity; None skips it), `fcgipool_normal = False` (keep a deliberately abnormal scenario out
  of the recommendations).

This file drives the small shop in loadtest/tests/otherapp (`python -m loadtest.tests.otherapp.serve`).
"""

import random

from locust import FastHttpUser, task


class Shopper(FastHttpUser):
    """Normal traffic: mostly page views and searches, some orders (202 at once; the receipt is rendered after
    the response, holding the worker ~200 ms)."""

    @task(5)
    def home(self):
        self.client.get("/")

    @task(3)
    def search(self):
        self.client.get(f"/search?q={random.choice(['tea', 'cups', 'pots'])}", name="/search")

    @task(2)
    def order(self):
        with self.client.post("/orders", json={"items": random.randint(1, 4)}, catch_response=True) as resp:
            if resp.status_code != 202:  # the app accepts an order with 202; anything else is a failure
                resp.failure(f"expected 202, got {resp.status_code}")


class Importer(FastHttpUser):
    """A nightly bulk import: 1.5 s of after-response work per request. Not what the pool is sized for, so it is
    measured (its own steps and checks) but kept out of the recommendations; no overload step."""

    fcgipool_normal = False
    fcgipool_loads = (0.5,)
    fcgipool_overload = None

    @task
    def start_import(self):
        self.client.post("/import", json={"source": "nightly.csv"})
