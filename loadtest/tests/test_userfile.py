"""A user's locustfile: loading, the contract's errors, and how its requests become open-loop rows (the cases are
in userfile_cases.py: each runs in a fresh interpreter, where locust can patch the standard library first)."""

import subprocess
import sys

import pytest

from loadtest.stack import Stack, StackError
from loadtest.tests.conftest import REPO


@pytest.mark.parametrize("case", ["the_example_follows_the_contract", "contract_errors_say_what_to_change",
                                  "requests_become_rows_with_latency_from_the_intended_start"])
def test_userfile(case, tmp_path):
    code = (f"import locust, pathlib; from loadtest.tests import userfile_cases as c; "
            f"c.case_{case}(*([pathlib.Path({str(tmp_path)!r})] if c.case_{case}.__code__.co_argcount else []))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_target_stack():
    st = Stack.for_target("http://127.0.0.1:9/", None)
    assert st.status_url == "http://127.0.0.1:9/pool-status" and st.mode == "target" and st.access_log is None
    assert Stack.for_target("http://h:1", "http://h:1/status").status_url == "http://h:1/status"
    with pytest.raises(StackError, match="not an http"):
        Stack.for_target("127.0.0.1:8080")
