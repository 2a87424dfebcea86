from django.urls import path

import benchviews

urlpatterns = [
    path("hello/", benchviews.hello),
    path("upload/", benchviews.upload),
]
