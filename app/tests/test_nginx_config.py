"""nginx/: the template renders for both modes, nginx accepts it, and every changed directive says why."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NGINX_DIR = Path(__file__).resolve().parents[2] / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def render(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "NGINX_LISTEN": "127.0.0.1:18080",
        "NGINX_RUN_DIR": str(tmp_path / "run"),
        "NGINX_ERROR_LOG": str(tmp_path / "error.log"),
        "NGINX_ACCESS_LOG": str(tmp_path / "access.log"),
        "FCGIPOOL_SOCKET": str(tmp_path / "pool.sock"),
        "FCGIPOOL_STATUS_SOCKET": str(tmp_path / "status.sock"),
        **overrides,
    }
    env = {k: v for k, v in env.items() if v is not None and v != "-"}
    return subprocess.run([str(NGINX_DIR / "render.sh"), str(tmp_path / "nginx.conf")], env=env,
                          capture_output=True, text=True)


def test_render_substitutes_only_our_placeholders(tmp_path):
    assert render(tmp_path).returncode == 0
    conf = (tmp_path / "nginx.conf").read_text()
    assert "${" not in "\n".join(line for line in conf.splitlines() if not line.lstrip().startswith("#"))
    assert f"server unix:{tmp_path}/pool.sock;" in conf
    # nginx's own variables pass through untouched
    for var in ("$upstream_header_time", "$request_time", "$request_uri", "$status"):
        assert var in conf
    assert not conf.startswith("user ")


def test_render_adds_the_user_only_when_asked(tmp_path):
    assert render(tmp_path, NGINX_USER="www-data").returncode == 0
    assert (tmp_path / "nginx.conf").read_text().startswith("user www-data;\n")


def test_render_names_a_missing_variable(tmp_path):
    result = render(tmp_path, FCGIPOOL_SOCKET="-")
    assert result.returncode != 0
    assert "set FCGIPOOL_SOCKET" in result.stderr
    assert not (tmp_path / "nginx.conf").exists()


@pytest.mark.nginx
@pytest.mark.skipif(not os.path.exists(NGINX), reason="needs Debian's nginx: sudo make install-system")
def test_nginx_accepts_the_rendered_config(tmp_path):
    assert render(tmp_path).returncode == 0
    result = subprocess.run([NGINX, "-t", "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_directive_in_the_shipped_config_has_a_why():
    """Each directive follows a comment, directly or as part of a block of directives the comment explains."""
    structural = re.compile(r"^(\}|(location|server|upstream|events|http)\b.*\{|'|\"|include\b|listen\b|"
                            r"server_name\b|allow\b|deny\b|internal;|return\b|default_type\b)")
    text = [line.strip() for line in (NGINX_DIR / "nginx.conf.template").read_text().splitlines()]
    unexplained = []
    for i, line in enumerate(text):
        if not line or line.startswith("#") or structural.match(line):
            continue
        j = i - 1
        while j >= 0 and text[j] and not text[j].startswith("#") and not text[j].endswith(("{", "}")):
            j -= 1  # walk up through the directives of the same block
        if j < 0 or not text[j].startswith("#"):
            unexplained.append(f"{i + 1}: {line}")
    assert not unexplained, "directives without a why above them:\n" + "\n".join(unexplained)
