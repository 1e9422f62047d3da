from django.urls import include, path

from .testapp.views import upload_view

urlpatterns = [
    path("", include("django_bridge.urls")),
    path("upload/", upload_view, name="upload"),
]
