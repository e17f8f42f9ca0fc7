import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line("markers", "stack: needs the stack started by `make up` (var/stack.json); else skipped")


def stack_is_up() -> bool:
    path = Path(os.environ.get("STACK_FILE") or REPO / "var" / "stack.json")
    try:
        status_url = json.loads(path.read_text())["status_url"]
        with urllib.request.urlopen(status_url + "?json", timeout=3) as resp:
            return resp.status == 200
    except (OSError, ValueError, KeyError):
        return False


def pytest_collection_modifyitems(config, items):
    if any(item.get_closest_marker("stack") for item in items) and not stack_is_up():
        skip = pytest.mark.skip(reason="no stack answers (start it with `make up`)")
        for item in items:
            if item.get_closest_marker("stack"):
                item.add_marker(skip)


@pytest.fixture
def fake_stack(tmp_path):
    """The stand-in stack (loadtest/tests/fakestack.py) in a subprocess: 4 workers, 1 s background budget."""
    proc = subprocess.Popen([sys.executable, "-m", "loadtest.tests.fakestack", str(tmp_path), "4", "1.0"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stack_file = tmp_path / "stack.json"
    deadline = time.monotonic() + 15
    while not stack_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"fake stack did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    yield stack_file
    proc.terminate()
    proc.wait(timeout=10)
