"""Load tests for the fcgipool stack: locust scenarios, open-loop arrivals, sampling, sizing model, report."""
