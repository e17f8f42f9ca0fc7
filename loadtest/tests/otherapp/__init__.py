"""A small app that is not the sample app, behind its own nginx + fcgipool: the `TARGET=` test of the load test."""
