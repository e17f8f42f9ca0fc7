"""Status page formats: PHP-FPM text (default), ``json``, ``xml``, ``html`` (self-refreshing), ``openmetrics``.

Text, JSON and XML use PHP-FPM's labels and layout (php-src sapi/fpm/fpm/fpm_status.c), so exporters written
for PHP-FPM read them. OpenMetrics keeps PHP-FPM's metric names but, unlike PHP-FPM, is valid OpenMetrics:
counter samples end in ``_total`` and high-water marks are gauges (docs/status.md lists the differences).

This module is imported by the arbiter, and every worker forked from it inherits what it imports: ``html`` is
imported where the XML and HTML pages are rendered, not here (``html`` is one of the imports
:mod:`fcgipool.lazyimports` defers, and a second ``import html`` would run it: 0.4 MiB), and XML is escaped with
``html.escape(quote=False)`` rather than ``xml.sax.saxutils.escape`` (the same three replacements; saxutils
imports ``urllib.request``, ``http.client`` and the ``email`` package: 1.7 MiB in every worker).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from .monitor import PoolStatus

__all__ = ["FORMATS", "parse_query", "render"]

FORMATS = ("text", "json", "xml", "html", "openmetrics")
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_TEXT_TIME = "%d/%b/%Y:%H:%M:%S %z"
_LABEL_WIDTH = 22  # PHP-FPM pads "max active processes: " to this column


def parse_query(query: str) -> tuple[str, bool, dict[str, str]]:
    """Format, full flag and other parameters from a query string such as ``json&full``."""
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    fmt = next((f for f in ("json", "xml", "html", "openmetrics") if f in params), "text")
    return fmt, "full" in params, params


def render(
    status: PoolStatus, fmt: str = "text", full: bool = False, params: Mapping[str, str] | None = None
) -> tuple[str, bytes]:
    """(content type, body) of the status page."""
    if fmt == "json":
        return "application/json", _json(status, full)
    if fmt == "xml":
        return "text/xml; charset=utf-8", _xml(status, full)
    if fmt == "html":
        return "text/html; charset=utf-8", _html(status, full, params or {})
    if fmt == "openmetrics":
        return OPENMETRICS_TYPE, _openmetrics(status, full)
    if fmt == "text":
        return "text/plain; charset=utf-8", _text(status, full)
    raise ValueError(f"unknown status format {fmt!r}; use one of {', '.join(FORMATS)}")


# --- text -------------------------------------------------------------------------------------------------
def _text_value(key: str, value: Any) -> str:
    if value is None:
        return "unknown"
    if key == "start time":
        return time.strftime(_TEXT_TIME, time.localtime(value))
    if isinstance(value, float):
        return f"{value:.2f}" if key == "last request cpu" else f"{value:.6f}".rstrip("0").rstrip(".") or "0"
    if isinstance(value, list):
        return ", ".join(value) or "-"
    return str(value)


def _text_line(key: str, value: Any) -> str:
    label = "request URI" if key == "request uri" else key  # PHP-FPM's text format spells it so
    return f"{label + ':':<{_LABEL_WIDTH - 1}} {_text_value(key, value)}\n"


def _text(status: PoolStatus, full: bool) -> bytes:
    fields = status.fields(full)
    procs = fields.pop("processes", [])
    out = [_text_line(k, v) for k, v in fields.items()]
    for proc in procs:
        out.append("\n************************\n")
        out.extend(_text_line(k, v) for k, v in proc.items())
    return "".join(out).encode()


# --- json -------------------------------------------------------------------------------------------------
def _json(status: PoolStatus, full: bool) -> bytes:
    return json.dumps(status.fields(full), separators=(",", ":"), ensure_ascii=False).encode()


# --- xml --------------------------------------------------------------------------------------------------
def _xml_fields(fields: Mapping[str, Any]) -> str:
    # PHP-FPM's element names are its labels with dashes; times are Unix timestamps, as in its XML and JSON
    import html  # not at the top: see the module docstring

    out = []
    for key, value in fields.items():
        tag = key.replace(" ", "-")
        if value is None:
            text = ""
        elif key == "start time":
            text = str(int(value))
        else:
            text = html.escape(_text_value(key, value), quote=False)
        out.append(f"<{tag}>{text}</{tag}>\n")
    return "".join(out)


def _xml(status: PoolStatus, full: bool) -> bytes:
    fields = status.fields(full)
    procs = fields.pop("processes", None)
    out = ['<?xml version="1.0" ?>\n<status>\n', _xml_fields(fields)]
    if procs is not None:
        out.append("<processes>\n")
        out.extend(f"<process>\n{_xml_fields(proc)}</process>\n" for proc in procs)
        out.append("</processes>\n")
    out.append("</status>\n")
    return "".join(out).encode()


# --- html -------------------------------------------------------------------------------------------------
def _html(status: PoolStatus, full: bool, params: Mapping[str, str]) -> bytes:
    try:
        refresh = max(0, min(3600, int(params.get("refresh") or 2)))
    except ValueError:
        refresh = 2
    fields = status.fields(full)
    procs = fields.pop("processes", [])
    import html  # not at the top: see the module docstring

    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(_text_value(k, v))}</td></tr>\n" for k, v in fields.items())
    out = [
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{refresh}">' if refresh else "",
        f"<title>fcgipool status: {esc(status.pool)}</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}th,td{padding:2px 8px;"
        "text-align:left;border-bottom:1px solid #ddd}tr.Finishing{background:#fff3cd}"
        "tr.Running,tr.Reading{background:#d1e7dd}</style></head>\n<body>\n",
        f"<h1>fcgipool status: {esc(status.pool)}</h1>\n",
        f'<p>Refreshes every {refresh} s. Other formats: <a href="?json&amp;full">json</a>, '
        '<a href="?xml&amp;full">xml</a>, '
        '<a href="?openmetrics&amp;full">openmetrics</a>, <a href="?full">text</a>.'
        + ("" if full else ' <a href="?html&amp;full">Show processes</a>.')
        + "</p>\n"
        if refresh
        else "",
        f"<table>\n{rows}</table>\n",
    ]
    if procs:
        head = "".join(f"<th>{esc(k)}</th>" for k in procs[0])
        out.append(f"<h2>Processes</h2>\n<table>\n<tr>{head}</tr>\n")
        for p in procs:
            cells = "".join(f"<td>{esc(_text_value(k, v))}</td>" for k, v in p.items())
            out.append(f'<tr class="{esc(p["state"].split()[0])}">{cells}</tr>\n')
        out.append("</table>\n")
    out.append("</body></html>\n")
    return "".join(out).encode()


# --- openmetrics ------------------------------------------------------------------------------------------
# (field, metric, type, help). Counters get the _total suffix on their sample, as OpenMetrics requires.
_POOL_METRICS = [
    ("start since", "phpfpm_start_since", "gauge", "The number of seconds since the pool has started."),
    ("accepted conn", "phpfpm_accepted_connections", "counter", "The number of requests accepted by the pool."),
    ("listen queue", "phpfpm_listen_queue", "gauge", "The number of requests in the queue of pending connections."),
    (
        "max listen queue",
        "phpfpm_max_listen_queue",
        "gauge",
        "The maximum number of requests in the queue of pending connections since the pool has started.",
    ),
    ("listen queue len", "phpfpm_listen_queue_length", "gauge", "The size of the socket queue of pending connections."),
    ("idle processes", "phpfpm_idle_processes", "gauge", "The number of idle processes."),
    (
        "active processes",
        "phpfpm_active_processes",
        "gauge",
        "The number of active processes (reading, running or finishing after-response work).",
    ),
    ("total processes", "phpfpm_total_processes", "gauge", "The number of idle + active processes."),
    (
        "max active processes",
        "phpfpm_max_active_processes",
        "gauge",
        "The maximum number of active processes since the pool has started.",
    ),
    (
        "max children reached",
        "phpfpm_max_children_reached",
        "counter",
        "The number of times all allowed processes were busy while connections waited (every pm mode).",
    ),
    ("slow requests", "phpfpm_slow_requests", "counter", "The number of requests that exceeded slowlog_timeout."),
    ("memory peak", "phpfpm_memory_peak", "gauge", "The largest last-request memory (RSS, bytes) of any process."),
    (
        "finishing processes",
        "fcgipool_finishing_processes",
        "gauge",
        "Processes busy with after-response work (a subset of the active processes).",
    ),
    ("background tasks run", "fcgipool_background_tasks_run", "counter", "After-response tasks that ran."),
    ("background tasks failed", "fcgipool_background_tasks_failed", "counter", "After-response tasks that raised."),
    (
        "background tasks lost",
        "fcgipool_background_tasks_lost",
        "counter",
        "After-response tasks that did not finish: timed out, killed, dropped at shutdown or never started.",
    ),
    ("background seconds", "fcgipool_background_seconds", "counter", "Seconds spent in after-response tasks."),
    (
        "kept connections waiting",
        "fcgipool_kept_connections_waiting",
        "gauge",
        "Idle kept connections passed on by a worker that no worker has taken yet (the hand-off queue).",
    ),
    (
        "request timeouts",
        "fcgipool_request_timeouts",
        "counter",
        "Requests whose app was interrupted at timeout and answered 504 by the worker (soft stop).",
    ),
    (
        "request timeout kills",
        "fcgipool_request_timeout_kills",
        "counter",
        "Workers killed because a request outlived timeout + kill_grace (the soft stop did not end it).",
    ),
    (
        "background timeouts",
        "fcgipool_background_timeouts",
        "counter",
        "After-response runs interrupted at background_timeout (soft stop).",
    ),
    (
        "background timeout kills",
        "fcgipool_background_timeout_kills",
        "counter",
        "Workers killed because after-response work outlived background_timeout + kill_grace.",
    ),
    (
        "connections rescued",
        "fcgipool_connections_rescued",
        "counter",
        "Idle kept connections of a worker that died, passed to the other workers instead of closed with it.",
    ),
]
_PROC_METRICS = [
    ("requests", "fcgipool_process_requests", "counter", "Requests served by the process."),
    (
        "request duration",
        "fcgipool_process_request_duration_microseconds",
        "gauge",
        "Duration of the current (reading/running) or last request's response phase, in microseconds.",
    ),
    ("last request cpu", "fcgipool_process_last_request_cpu_percent", "gauge", "CPU % of the last request."),
    ("last request memory", "fcgipool_process_last_request_memory_bytes", "gauge", "RSS after the last request."),
    ("memory rss", "fcgipool_process_memory_rss_bytes", "gauge", "RSS of the process after its last request."),
    ("background tasks run", "fcgipool_process_background_tasks_run", "counter", "After-response tasks run."),
    ("background tasks failed", "fcgipool_process_background_tasks_failed", "counter", "After-response tasks failed."),
    ("background tasks lost", "fcgipool_process_background_tasks_lost", "counter", "After-response tasks lost."),
    ("background seconds", "fcgipool_process_background_seconds", "counter", "Seconds of after-response work."),
]


def _esc_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float | int) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _family(out: list[str], metric: str, mtype: str, help_: str) -> str:
    out.append(f"# HELP {metric} {help_}\n# TYPE {metric} {mtype}\n")
    return f"{metric}_total" if mtype == "counter" else metric


def _openmetrics_spill(fields: Mapping[str, Any], out: list[str]) -> None:
    """Spill (fcgipool.spill): tasks handed to the queue by reason, fallbacks, outages, the queue's depth."""
    help_spilled = "After-response tasks handed to the spill queue instead of run in the pool, by reason."
    sample = _family(out, "fcgipool_background_tasks_spilled", "counter", help_spilled)
    by_reason = (("shutdown", "spilled at shutdown"), ("saturated", "spilled saturated"), ("slow", "spilled slow"))
    for reason, key in by_reason:
        out.append(f'{sample}{{reason="{reason}"}} {_num(fields[key])}\n')
    for key, metric, mtype, help_ in (
        ("spill fallbacks", "fcgipool_spill_fallbacks", "counter",
         "Tasks that were to spill but ran in the pool because the queue did not answer."),
        ("spill queue outages", "fcgipool_spill_queue_outages", "counter",
         "Episodes in which the spill queue did not answer (logged once each)."),
        ("spill queue depth", "fcgipool_spill_queue_depth", "gauge", "Jobs in the spill queue not yet started."),
        ("pool saturated", "fcgipool_pool_saturated", "gauge",
         "1 while finishing workers are at spill_threshold of the pool or connections wait (held 1 s, and while "
         "the tasks spilling would fill the pool again)."),
    ):  # fmt: skip
        name = _family(out, metric, mtype, help_)
        if fields.get(key) is not None:
            out.append(f"{name} {_num(int(fields[key]))}\n")


def _openmetrics(status: PoolStatus, full: bool) -> bytes:
    fields = status.fields(full)
    out: list[str] = []
    _family(
        out,
        "phpfpm_up",
        "gauge",
        f"Could pool {_esc_label(status.pool)} using a {status.process_manager} PM be reached?",
    )
    out.append("phpfpm_up 1\n")
    for key, metric, mtype, help_ in _POOL_METRICS:
        sample = _family(out, metric, mtype, help_)
        if fields[key] is not None:  # unknown listen queue: no sample rather than a made-up 0
            out.append(f"{sample} {_num(fields[key])}\n")
    if "background tasks spilled" in fields:
        _openmetrics_spill(fields, out)
    procs = fields.get("processes") or []
    if procs:
        _family(out, "fcgipool_process_state", "gauge", "1 for the process's current state.")
        for p in procs:
            labels = f'pid="{p["pid"]}",state="{_esc_label(p["state"])}"'
            out.append(f"fcgipool_process_state{{{labels}}} 1\n")
        for key, metric, mtype, help_ in _PROC_METRICS:
            sample = _family(out, metric, mtype, help_)
            out.extend(f'{sample}{{pid="{p["pid"]}"}} {_num(p[key])}\n' for p in procs)
    out.append("# EOF\n")
    return "".join(out).encode()
