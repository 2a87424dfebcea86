"""URLs of the Django comparison project."""

from django.urls import path

from . import django_views as v

urlpatterns = [
    path("django/hello/", v.hello),
    path("django/meta/", v.meta),
    path("django/ünïcode/<str:word>/", v.unicode_view),
    path("django/404/", v.not_found),
    path("django/500/", v.boom),
    path("django/cookies/", v.cookies),
    path("django/login/", v.login_view),
    path("django/whoami/", v.whoami),
    path("django/form/", v.form),
    path("django/upload/", v.upload),
    path("django/body/", v.raw_body),
    path("django/stream/", v.stream),
    path("django/stream-fail/", v.stream_fail),
    path("django/astream/", v.astream),
    path("django/file/", v.file_view),
    path("django/go/", v.go_hello),
    path("django/later/", v.later),
    path("django/204/", v.no_content),
]
