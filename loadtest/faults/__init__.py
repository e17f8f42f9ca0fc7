"""`make faults`: inject faults into the running stack under load and check what each one costs.

Each fault gives one :class:`~loadtest.faults.table.FaultRow`: failed requests, replays (from nginx's
``$upstream_status``), after-response tasks lost without a report (from the ledger) and the expectation.
``python -m loadtest.faults run [--short] [--only a,b]``; the rows are in rows_process.py and rows_resource.py,
their arithmetic in accounting.py, the stack's handles in control.py (docs/reliability.md).
"""
