"""POST /orders enqueues a receipt mail; GET /reports enqueues `count` reports; GET /reports/async is an async view
that awaits aenqueue(). All answer 202 at once."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .tasks import build_report, send_receipt

MAX_MS = 60_000


def _ms(source: Any, default: int) -> int | JsonResponse:
    try:
        ms = int(source.get("ms", default))
    except ValueError:
        return JsonResponse({"error": "ms must be a whole number", "status": 400, "field": "ms"}, status=400)
    if not 0 <= ms <= MAX_MS:
        return JsonResponse({"error": f"ms must be 0..{MAX_MS}", "status": 400, "field": "ms"}, status=400)
    return ms


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "fcgipool + django tasks"})


@csrf_exempt
def order(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST an email", "status": 405}, status=405)
    email = request.POST.get("email", "")
    if "@" not in email:
        return JsonResponse({"error": "email is required", "status": 400, "field": "email"}, status=400)
    ms = _ms(request.POST, 300)
    if isinstance(ms, JsonResponse):
        return ms
    order_id = uuid.uuid4().hex[:12]
    result = send_receipt.enqueue(order_id, email, ms)  # runs after this response has gone
    return JsonResponse({"order_id": order_id, "task_result": result.id, "task_status": str(result.status)},
                        status=202)  # fmt: skip


def reports(request: HttpRequest) -> JsonResponse:
    ms = _ms(request.GET, 100)
    if isinstance(ms, JsonResponse):
        return ms
    key = request.GET.get("key", "report")[:40]
    try:
        count = int(request.GET.get("count", 1))
    except ValueError:
        count = -1
    if not 1 <= count <= 20:
        return JsonResponse({"error": "count must be 1..20", "status": 400, "field": "count"}, status=400)
    results = [build_report.enqueue(f"{key}:{i}", ms) for i in range(count)]
    return JsonResponse({"task_results": [r.id for r in results]}, status=202)


async def report_async(request: HttpRequest) -> JsonResponse:
    """aenqueue() from an async view: Django runs it under WSGI with async_to_sync, and asgiref carries the
    request's context (fcgipool's task list) into the thread where enqueue() runs."""
    ms = _ms(request.GET, 100)
    if isinstance(ms, JsonResponse):
        return ms
    result = await build_report.aenqueue(request.GET.get("key", "async")[:40], ms)
    return JsonResponse({"task_result": result.id, "task_status": str(result.status)}, status=202)
