"""URLs of settings_django: the comparison URLs plus Django's admin."""

from django.contrib import admin
from django.urls import path

from .django_urls import urlpatterns as comparison

urlpatterns = [*comparison, path("admin/", admin.site.urls)]
