"""Status formats from a real scoreboard (unit level; the nginx tests cover the served page)."""

from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest
from fcgipool.scoreboard import Scoreboard, WorkerState
from fcgipool.status.formats import parse_query, render
from fcgipool.status.monitor import PoolMonitor
from prometheus_client.openmetrics.parser import text_string_to_metric_families

PHP_FPM_POOL_KEYS = [
    "pool",
    "process manager",
    "start time",
    "start since",
    "accepted conn",
    "listen queue",
    "max listen queue",
    "listen queue len",
    "idle processes",
    "active processes",
    "total processes",
    "max active processes",
    "max children reached",
    "slow requests",
    "memory peak",
]
PHP_FPM_PROC_KEYS = [
    "pid",
    "state",
    "start time",
    "start since",
    "requests",
    "request duration",
    "request method",
    "request uri",
    "content length",
    "user",
    "script",
    "last request cpu",
    "last request memory",
]


def parse_php_fpm_text(body: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The way PHP-FPM text exporters read the page: 'key: value' lines, processes after '****' rules."""
    blocks = body.split("\n************************\n")

    def kv(block: str) -> dict[str, str]:
        out = {}
        for line in block.strip("\n").splitlines():
            m = re.match(r"^([a-zA-Z ]+):\s+(.*)$", line)
            assert m, f"unparseable line {line!r}"
            out[m.group(1)] = m.group(2)
        return out

    return kv(blocks[0]), [kv(b) for b in blocks[1:]]


@pytest.fixture
def monitor(tmp_path):
    sb = Scoreboard(4)
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(str(tmp_path / "pool.sock"))
    lsock.listen(16)
    slots = []
    for _ in range(3):
        i = sb.acquire(pid=os.getpid())
        slots.append(sb.slot(i))
    slots[0].begin_request("GET", "/work", 'a=1&b="x"', 0)
    slots[1].begin_request("POST", "/signup", "", 12)
    slots[1].end_response(cpu_seconds=0.01, memory_bytes=50_000_000)
    slots[1].set_pending(["send_mail", 'write "ledger"'])
    slots[1].set_state(WorkerState.FINISHING)
    slots[1].task_finished("send_mail", ok=False, seconds=0.5)
    slots[2].slow_request()
    slots[0].count_timeout("request")
    slots[2].count_timeout("background")
    slots[2].count_timeout("background")
    sb.count("request_kills")
    sb.count("connections_rescued", 3)
    clients = [socket.socket(socket.AF_UNIX) for _ in range(2)]
    for c in clients:
        c.connect(lsock.getsockname())
    mon = PoolMonitor(sb, lambda: [lsock], pool="www", process_manager=lambda: "static", max_children=lambda: 3)
    yield mon
    for c in clients:
        c.close()
    lsock.close()


def test_text_format_reads_like_php_fpm(monitor):
    ctype, body = render(monitor.sample(), "text", full=True)
    assert ctype.startswith("text/plain")
    text = body.decode()
    assert text.startswith("pool:                 www\nprocess manager:      static\n")
    assert "max active processes: 2\n" in text
    pool, procs = parse_php_fpm_text(text)
    assert list(pool)[: len(PHP_FPM_POOL_KEYS)] == PHP_FPM_POOL_KEYS
    assert pool["listen queue"] == "2" and pool["listen queue len"] == "16"
    assert pool["active processes"] == "2" and pool["idle processes"] == "1" and pool["finishing processes"] == "1"
    assert pool["slow requests"] == "1" and pool["background tasks failed"] == "1"
    assert re.fullmatch(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}", pool["start time"])
    assert len(procs) == 3
    assert [k.lower() for k in procs[0]][: len(PHP_FPM_PROC_KEYS)] == PHP_FPM_PROC_KEYS
    assert procs[0]["request URI"] == '/work?a=1&b="x"' and procs[0]["state"] == "Running"
    assert procs[1]["state"] == "Finishing" and procs[1]["last request cpu"] != "0.00"


def test_json_format_has_php_fpm_keys_and_ours(monitor):
    ctype, body = render(monitor.sample(), "json", full=True)
    assert ctype == "application/json"
    data = json.loads(body)
    assert list(data)[: len(PHP_FPM_POOL_KEYS)] == PHP_FPM_POOL_KEYS
    assert data["finishing processes"] == 1 and data["background tasks run"] == 1
    assert data["max children reached"] == 0  # one process is idle
    assert (data["request timeouts"], data["request timeout kills"], data["background timeouts"]) == (1, 1, 2)
    proc = data["processes"][1]
    assert list(proc)[: len(PHP_FPM_PROC_KEYS)] == PHP_FPM_PROC_KEYS
    assert proc["pending tasks"] == ['write "ledger"'] and proc["last request memory"] == 50_000_000
    assert data["processes"][0]["request uri"] == '/work?a=1&b="x"'
    short = json.loads(render(monitor.sample(), "json")[1])
    assert "processes" not in short and isinstance(short["start time"], int)


def test_openmetrics_parses_with_prometheus_client(monitor):
    ctype, body = render(monitor.sample(), "openmetrics", full=True)
    assert ctype.startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["phpfpm_listen_queue"].samples[0].value == 2
    assert families["phpfpm_accepted_connections"].type == "counter"
    assert families["phpfpm_accepted_connections"].samples[0].name == "phpfpm_accepted_connections_total"
    assert families["fcgipool_finishing_processes"].samples[0].value == 1
    states = {s.labels["state"] for s in families["fcgipool_process_state"].samples}
    assert states == {"Running", "Finishing", "Idle"}
    # soft and hard stops are separate counters
    samples = {f.name: (f.type, f.samples[0].value) for f in families.values() if f.samples}
    assert samples["fcgipool_request_timeouts"] == ("counter", 1)
    assert samples["fcgipool_request_timeout_kills"] == ("counter", 1)
    assert samples["fcgipool_background_timeouts"] == ("counter", 2)
    assert samples["fcgipool_background_timeout_kills"] == ("counter", 0)
    assert samples["fcgipool_connections_rescued"] == ("counter", 3)


def test_xml_has_php_fpm_layout_and_the_json_values(monitor):
    import xml.etree.ElementTree as ET

    status = monitor.sample()
    ctype, body = render(status, "xml", full=True)
    assert ctype.startswith("text/xml") and body.startswith(b'<?xml version="1.0" ?>\n<status>\n<pool>')
    root = ET.fromstring(body)
    data = json.loads(render(status, "json", full=True)[1])
    assert root.tag == "status"
    assert root.findtext("pool") == data["pool"] and root.findtext("process-manager") == data["process manager"]
    assert root.findtext("start-time") == str(data["start time"])  # a Unix timestamp, as PHP-FPM's XML
    assert int(root.findtext("listen-queue")) == data["listen queue"] == 2
    assert int(root.findtext("finishing-processes")) == data["finishing processes"]
    procs = root.findall("processes/process")
    assert len(procs) == len(data["processes"])
    uris = {p.findtext("request-uri") for p in procs}
    assert '/work?a=1&b="x"' in uris  # escaped in the document, the same string once parsed
    assert b'<request-uri>/work?a=1&amp;b="x"</request-uri>' in body  # only &, < and > escaped
    short = ET.fromstring(render(status, "xml")[1])
    assert short.find("processes") is None


def test_html_refreshes_and_escapes(monitor):
    ctype, body = render(monitor.sample(), "html", full=True, params={"refresh": "5"})
    page = body.decode()
    assert ctype.startswith("text/html")
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "/work?a=1&amp;b=&quot;x&quot;" in page and '"x"' not in page.split("<body>")[1]


def test_query_parsing_and_unknown_format():
    assert parse_query("") == ("text", False, {})
    assert parse_query("json&full")[:2] == ("json", True)
    assert parse_query("full&openmetrics")[:2] == ("openmetrics", True)
    assert parse_query("xml&full")[:2] == ("xml", True)
    assert parse_query("html&refresh=3") == ("html", False, {"html": "", "refresh": "3"})
    with pytest.raises(ValueError, match="unknown status format"):
        render(None, "yaml")  # type: ignore[arg-type]


def test_max_children_episodes_are_logged_once_and_counted(tmp_path, caplog):
    sb = Scoreboard(2)
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(str(tmp_path / "p.sock"))
    lsock.listen(8)
    a, b = (sb.slot(sb.acquire(pid=os.getpid())) for _ in range(2))
    mon = PoolMonitor(sb, lambda: [lsock], pool="www", process_manager=lambda: "static", max_children=lambda: 2)
    a.begin_request("GET", "/", "", 0)
    b.begin_request("GET", "/", "", 0)
    assert mon.sample().max_children_reached == 0  # all busy, nobody waiting
    c = socket.socket(socket.AF_UNIX)
    c.connect(lsock.getsockname())
    with caplog.at_level("WARNING"):
        for _ in range(3):
            st = mon.sample()
    assert st.max_children_reached == 1 and st.max_listen_queue == 1
    assert [r.getMessage() for r in caplog.records].count(
        "[pool www] server reached max children setting (2), consider raising it "
        "(--pm-max-children, or --workers with pm static)"
    ) == 1
    conn, _ = lsock.accept()
    a.set_state(WorkerState.IDLE)
    mon.episode_calm = 0.2
    assert mon.sample().max_children_reached == 1 and mon.in_episode  # an instant of calm ends nothing
    a.begin_request("GET", "/", "", 0)
    c3 = socket.socket(socket.AF_UNIX)
    c3.connect(lsock.getsockname())
    assert mon.sample().max_children_reached == 1  # saturated again: the same episode
    conn3, _ = lsock.accept()
    a.set_state(WorkerState.IDLE)
    mon.sample()
    time.sleep(0.25)
    assert mon.sample().max_children_reached == 1 and not mon.in_episode  # calm for episode_calm: over
    a.begin_request("GET", "/", "", 0)
    c2 = socket.socket(socket.AF_UNIX)
    c2.connect(lsock.getsockname())
    assert mon.sample().max_children_reached == 2
    mon.note_max_children()  # same episode: not counted again
    assert mon.sample().max_children_reached == 2
    for s in (c, c2, c3, conn, conn3, lsock):
        s.close()
