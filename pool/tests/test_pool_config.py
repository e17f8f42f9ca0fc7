"""Settings: declared once, validated with clear messages, env vars applied, reference generated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fcgipool import config
from fcgipool.cli import FcgiPoolApplication
from gunicorn.config import Config

REPO = Path(__file__).resolve().parents[2]


def make_cfg() -> Config:
    config.load_all()
    return Config()


def test_every_setting_has_section_validator_default_and_description() -> None:
    names = [s.name for s in config.load_all()]
    assert {"background_timeout", "keep_conn", "max_params_size", "max_body_size", "on_task_lost"} <= set(names)
    assert len(names) == len(set(names))
    for s in config.load_all():
        assert s.section.startswith("FastCGI pool"), s.name
        assert s.desc and s.short, s.name
        hook = s.name in ("on_task_lost", "on_task_spilled")  # hooks: a config file only
        assert hook or s.cli, f"{s.name} has no command-line flag"
        assert s.env is None or s.env.startswith("FCGIPOOL_"), s.name


def test_defaults_are_valid() -> None:
    cfg = make_cfg()
    assert cfg.background_timeout == 30.0
    assert cfg.keep_conn == "allow"
    assert cfg.max_params_size == 256 * 1024


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("background_timeout", "-1", "background_timeout must be a finite number of seconds >= 0"),
        ("background_timeout", "soon", "background_timeout must be a number"),
        ("kill_grace", "inf", "kill_grace must be a finite number"),
        # added by the handoff_after tests (pool/tests/test_pool_handoff_after.py has the CLI/env cases)
        ("handoff_after", "-1", "handoff_after must be a finite number of seconds >= 0"),
        ("keep_conn", "maybe", "keep_conn must be one of allow, disable"),
        ("max_params_size", "12", "max_params_size must be at least 1024 bytes"),
        ("max_body_size", "ten", "max_body_size must be a whole number"),
        ("background_stop_on_error", "perhaps", "background_stop_on_error must be true or false"),
        ("on_task_lost", "no.such.module.hook", "on_task_lost: cannot load"),
        ("on_task_lost", "os.getpid", "on_task_lost must accept exactly 2 arguments"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(name: str, value: str, message: str) -> None:
    cfg = make_cfg()
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        cfg.set(name, value)


def test_sizes_accept_suffixes() -> None:
    cfg = make_cfg()
    cfg.set("max_body_size", "10M")
    cfg.set("max_params_size", "64k")
    assert (cfg.max_body_size, cfg.max_params_size) == (10 * 1024**2, 64 * 1024)


def test_env_vars_sit_between_config_file_and_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = tmp_path / "conf.py"
    conf.write_text("background_timeout = 5\nkill_grace = 3\nmax_body_size = 1000\n")
    monkeypatch.setenv("FCGIPOOL_BACKGROUND_TIMEOUT", "7")
    monkeypatch.setenv("FCGIPOOL_KILL_GRACE", "4")
    monkeypatch.setattr(sys, "argv", ["fcgipool", "-c", str(conf), "--kill-grace", "9", "bgapp:app"])
    app = FcgiPoolApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="fcgipool")
    assert app.cfg is not None
    assert app.cfg.background_timeout == 7.0  # env over config file
    assert app.cfg.kill_grace == 9.0  # command line over env
    assert app.cfg.max_body_size == 1000  # config file over default
    assert app.cfg.worker_class_str == "fcgipool.worker.FastCGIWorker"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = str(REPO / "pool")
    return subprocess.run(
        [sys.executable, "-m", "fcgipool.cli", *args], capture_output=True, text=True, timeout=30, env=full_env
    )


def test_cli_rejects_a_bad_flag_value_before_starting() -> None:
    proc = run_cli("--background-timeout", "-5", "--check-config", "bgapp:app")
    assert proc.returncode == 2
    assert "--background-timeout: background_timeout must be a finite number of seconds >= 0" in proc.stderr


def test_cli_rejects_a_bad_env_value_before_starting() -> None:
    proc = run_cli("--check-config", "bgapp:app", env={"FCGIPOOL_KEEP_CONN": "sometimes"})
    assert proc.returncode == 1
    assert "FCGIPOOL_KEEP_CONN: keep_conn must be one of allow, disable" in proc.stderr


def test_cli_rejects_a_bad_config_file_value(tmp_path: Path) -> None:
    conf = tmp_path / "bad.py"
    conf.write_text("max_params_size = 10\n")
    proc = run_cli("-c", str(conf), "--check-config", "bgapp:app")
    assert proc.returncode != 0
    assert "max_params_size must be at least 1024 bytes" in proc.stderr


def test_app_that_fails_to_import_stops_the_pool_with_the_boot_error_code(tmp_path: Path) -> None:
    proc = run_cli("--bind", f"unix:{tmp_path}/s.sock", "--control-socket", f"{tmp_path}/c.sock", "no_such_module:app")
    # the worker exits with gunicorn's WORKER_BOOT_ERROR and the arbiter gives up instead of respawning
    assert proc.returncode == 3
    assert "No module named 'no_such_module'" in proc.stderr
    assert "Reason: Worker failed to boot." in proc.stderr


def test_cli_help_lists_fcgipool_settings() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for flag in ("--background-timeout", "--keep-conn", "--max-body-size", "--kill-grace"):
        assert flag in proc.stdout


def test_version_names_fcgipool_and_gunicorn() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("fcgipool 0.1.0 (gunicorn 27.")
    assert ", C speedups)" in proc.stdout, proc.stdout


def test_status_subcommand_is_dispatched() -> None:
    proc = run_cli("status", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "status" in proc.stdout.lower()


def test_settings_reference_is_generated_from_the_declarations() -> None:
    text = config.markdown()
    for s in config.load_all():
        assert f"### `{s.name}`" in text
        if s.env:
            assert f"`{s.env}`" in text
    doc = REPO / "docs" / "settings.md"
    assert doc.read_text() == text, "docs/settings.md is stale: run `python -m fcgipool.config --markdown`"


def test_shipped_gunicorn_conf_loads_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = REPO / "pool" / "gunicorn.conf.py"
    monkeypatch.setenv("FCGIPOOL_WORKERS", "3")
    monkeypatch.setattr(sys, "argv", ["fcgipool", "-c", str(conf), "bgapp:app"])
    app = FcgiPoolApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="fcgipool")
    assert app.cfg is not None
    assert app.cfg.workers == 3
    assert app.cfg.worker_class_str == "fcgipool.worker.FastCGIWorker"


def test_shipped_gunicorn_conf_makes_sockets_0660(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The shipped config's umask gives the FastCGI socket 0660 (group-shared with nginx), as its comment says."""
    import socket

    from gunicorn.sock import UnixSocket

    monkeypatch.delenv("FCGIPOOL_UMASK", raising=False)
    monkeypatch.setattr(sys, "argv", ["fcgipool", "-c", str(REPO / "pool" / "gunicorn.conf.py"), "bgapp:app"])
    app = FcgiPoolApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="fcgipool")
    assert app.cfg is not None
    path = tmp_path / "pool.sock"
    listener = UnixSocket(str(path), app.cfg, app.cfg.logger_class(app.cfg))
    try:
        assert listener.sock.family == socket.AF_UNIX
        assert oct(path.stat().st_mode & 0o777) == oct(0o660)
    finally:
        listener.close()


# Users' configs name these: a flag or environment variable must never change name or vanish by accident
# (env and type are derived from the name, so a rename of a setting would silently rename both).
PINNED = [
    ('background_timeout', '--background-timeout', 'FCGIPOOL_BACKGROUND_TIMEOUT'),
    ('background_stop_on_error', '--background-stop-on-error', 'FCGIPOOL_BACKGROUND_STOP_ON_ERROR'),
    ('background_only_on_success', '--background-only-on-success', 'FCGIPOOL_BACKGROUND_ONLY_ON_SUCCESS'),
    ('kill_grace', '--kill-grace', 'FCGIPOOL_KILL_GRACE'),
    ('keep_conn', '--keep-conn', 'FCGIPOOL_KEEP_CONN'),
    ('handoff_after', '--handoff-after', 'FCGIPOOL_HANDOFF_AFTER'),
    ('max_params_size', '--max-params-size', 'FCGIPOOL_MAX_PARAMS_SIZE'),
    ('max_body_size', '--max-body-size', 'FCGIPOOL_MAX_BODY_SIZE'),
    ('output_buffer_size', '--output-buffer-size', 'FCGIPOOL_OUTPUT_BUFFER_SIZE'),
    ('scoreboard_slots', '--scoreboard-slots', 'FCGIPOOL_SCOREBOARD_SLOTS'),
    ('on_task_lost', None, None),
    ('max_worker_memory', '--max-worker-memory', 'FCGIPOOL_MAX_WORKER_MEMORY'),
    ('request_log', '--request-log', 'FCGIPOOL_REQUEST_LOG'),
    ('request_log_query', '--request-log-query', 'FCGIPOOL_REQUEST_LOG_QUERY'),
    ('spill_to', '--spill-to', 'FCGIPOOL_SPILL_TO'),
    ('spill_when', '--spill-when', 'FCGIPOOL_SPILL_WHEN'),
    ('spill_threshold', '--spill-threshold', 'FCGIPOOL_SPILL_THRESHOLD'),
    ('spill_slower_than', '--spill-slower-than', 'FCGIPOOL_SPILL_SLOWER_THAN'),
    ('spill_queue', '--spill-queue', 'FCGIPOOL_SPILL_QUEUE'),
    ('on_task_spilled', None, None),
    ('status_listen', '--status-listen', 'FCGIPOOL_STATUS_LISTEN'),
    ('status_path', '--status-path', 'FCGIPOOL_STATUS_PATH'),
    ('ping_path', '--ping-path', 'FCGIPOOL_PING_PATH'),
    ('ping_response', '--ping-response', None),
    ('pool_name', '--pool-name', 'FCGIPOOL_POOL_NAME'),
    ('slowlog_timeout', '--slowlog-timeout', 'FCGIPOOL_SLOWLOG_TIMEOUT'),
    ('slowlog', '--slowlog', 'FCGIPOOL_SLOWLOG'),
    ('pm', '--pm', 'FCGIPOOL_PM'),
    ('pm_max_children', '--pm-max-children', 'FCGIPOOL_PM_MAX_CHILDREN'),
    ('pm_start_servers', '--pm-start-servers', 'FCGIPOOL_PM_START_SERVERS'),
    ('pm_min_spare_servers', '--pm-min-spare-servers', 'FCGIPOOL_PM_MIN_SPARE_SERVERS'),
    ('pm_max_spare_servers', '--pm-max-spare-servers', 'FCGIPOOL_PM_MAX_SPARE_SERVERS'),
    ('pm_max_spawn_rate', '--pm-max-spawn-rate', 'FCGIPOOL_PM_MAX_SPAWN_RATE'),
    ('pm_process_idle_timeout', '--pm-process-idle-timeout', 'FCGIPOOL_PM_PROCESS_IDLE_TIMEOUT'),
]


def test_every_flag_and_environment_variable_keeps_its_name() -> None:
    assert [(s.name, (s.cli or [None])[0], s.env) for s in config.load_all()] == PINNED
    assert all(len(s.cli or []) <= 1 for s in config.load_all())  # a second spelling would escape the pin
