from django.urls import path

from . import views

urlpatterns = [
    path("", views.hello),
    path("orders", views.order),
    path("reports", views.reports),
    path("reports/async", views.report_async),
]
