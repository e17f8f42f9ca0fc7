"""Bad status/pm settings stop the fcgipool command with a message that says what to change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fcgipool.cli", *args, "statusapp:app"], cwd=HERE,
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def test_contradicting_pm_settings_exit_1_naming_the_settings(tmp_path):
    r = run("--bind", f"unix:{tmp_path}/p.sock", "--pm", "dynamic", "--pm-min-spare-servers", "5",
            "--pm-max-spare-servers", "2", "--pm-max-children", "8")  # fmt: skip
    assert r.returncode == 1
    assert "pm_min_spare_servers (5) must not exceed pm_max_spare_servers (2)" in r.stderr


def test_bad_flag_values_are_rejected_by_the_parser():
    r = run("--status-listen", "/run/status.sock")
    assert r.returncode == 2 and "status listen address must be unix:/path or HOST:PORT" in r.stderr
    r = run("--pm", "turbo")
    assert r.returncode == 2 and "pm must be one of static, dynamic, ondemand" in r.stderr


def test_status_listener_address_in_use_is_a_clear_error(tmp_path):
    import socket

    taken = socket.socket(socket.AF_UNIX)
    taken.bind(str(tmp_path / "status.sock"))
    taken.listen(1)
    try:
        r = run("--bind", f"unix:{tmp_path}/p.sock", "--status-listen", f"unix:{tmp_path}/status.sock")
    finally:
        taken.close()
    assert r.returncode == 1 and f"cannot listen for status on unix:{tmp_path}/status.sock" in r.stderr
