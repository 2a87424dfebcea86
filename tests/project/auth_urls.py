"""Login and logout views for the auth tests: plain Django views."""

from django.contrib.auth import authenticate, login, logout
from django.contrib.auth.models import User
from django.http import HttpResponse, HttpResponseForbidden
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def login_view(request):
    user = authenticate(request, username=request.POST.get("username"),
                        password=request.POST.get("password"))
    if user is None:
        return HttpResponseForbidden("bad credentials")
    login(request, user)
    return HttpResponse(request.session.session_key)


@csrf_exempt
def register_view(request):
    """Create a user (test projects only): the subprocess tests have no other way in."""
    User.objects.create_user(request.POST["username"], password=request.POST["password"])
    return HttpResponse("created")


@csrf_exempt
def logout_view(request):
    logout(request)
    return HttpResponse("bye")


urlpatterns = [
    path("auth/login/", login_view),
    path("auth/logout/", logout_view),
    path("auth/register/", register_view),
]
