from django.http import JsonResponse
from django.urls import include, path
from orders.views import OrderViewSet
from rest_framework.routers import DefaultRouter

router = DefaultRouter()
router.register("orders", OrderViewSet)


def health(request):  # for the benchmark's start-up poll only
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("health", health),
    path("", include(router.urls)),
]
