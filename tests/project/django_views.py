"""Views of the Django comparison project (tests/test_django*.py, runserver tests)."""

import asyncio
import hashlib

from django.contrib.auth import authenticate, login
from django.http import (
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.views.decorators.csrf import csrf_exempt

from chanserve.exceptions import ResponseLater

# Reply channels of requests answered later (ResponseLater), for tests.
LATER = []


def hello(request):
    return HttpResponse("hello from django")


def meta(request):
    """What Django made of the request."""
    return JsonResponse({
        "method": request.method,
        "path": request.path,
        "path_info": request.path_info,
        "script_name": request.META.get("SCRIPT_NAME"),
        "full_path": request.get_full_path(),
        "absolute_uri": request.build_absolute_uri(),
        "scheme": request.scheme,
        "is_secure": request.is_secure(),
        "host": request.get_host(),
        "GET": {k: request.GET.getlist(k) for k in request.GET},
        "COOKIES": request.COOKIES,
        "content_type": request.content_type,
        "accept": request.META.get("HTTP_ACCEPT"),
        "x_multi": request.META.get("HTTP_X_MULTI"),
        "user_agent": request.headers.get("User-Agent"),
    })


def unicode_view(request, word):
    return HttpResponse(f"word={word} q={request.GET.get('q', '')} path={request.path}")


def not_found(request):
    raise Http404("nothing here")


def boom(request):
    raise ValueError("boom")


def cookies(request):
    response = HttpResponse("cookies set")
    response.set_cookie("first", "1", max_age=60, httponly=True)
    response.set_cookie("second", "two words", samesite="Lax")
    response.delete_cookie("gone")
    return response


def login_view(request):
    if request.method == "POST":
        user = authenticate(request, username=request.POST.get("username"),
                            password=request.POST.get("password"))
        if user is None:
            return HttpResponse("bad credentials", status=401)
        login(request, user)
        return HttpResponseRedirect("/django/whoami/")
    return HttpResponse(f"<form method=post><input name=csrfmiddlewaretoken value={get_token(request)}>")


def whoami(request):
    user = request.user
    return HttpResponse(user.get_username() if user.is_authenticated else "anonymous")


def form(request):
    if request.method == "POST":
        return HttpResponse("posted " + request.POST.get("name", ""))
    return HttpResponse(f"token={get_token(request)}")


@csrf_exempt
def upload(request):
    files = {}
    for field, upload in request.FILES.items():
        digest = hashlib.sha256()
        for chunk in upload.chunks():
            digest.update(chunk)
        files[field] = {
            "name": upload.name,
            "size": upload.size,
            "sha256": digest.hexdigest(),
            "on_disk": hasattr(upload, "temporary_file_path"),
        }
    return JsonResponse({"fields": {k: request.POST.getlist(k) for k in request.POST},
                         "files": files})


@csrf_exempt
def raw_body(request):
    body = request.body
    return JsonResponse({"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})


def stream(request):
    count = int(request.GET.get("count", "5"))
    size = int(request.GET.get("size", "10"))

    def parts():
        for i in range(count):
            yield (b"%d" % (i % 10)) * size

    return StreamingHttpResponse(parts(), content_type="application/octet-stream")


def stream_fail(request):
    def parts():
        yield b"first"
        raise RuntimeError("the stream broke")

    return StreamingHttpResponse(parts(), content_type="text/plain")


def astream(request):
    """An endless async stream (server-sent events style); writes ``done`` on close."""
    done = request.GET["done"]

    async def ticks():
        try:
            yield b"first\n"
            while True:
                await asyncio.sleep(0.2)
                yield b"tick\n"
        finally:
            with open(done, "w") as f:
                f.write("closed")

    return StreamingHttpResponse(ticks(), content_type="text/plain")


def file_view(request):
    return FileResponse(open(__file__, "rb"), as_attachment=True, filename="views.py")


def go_hello(request):
    return redirect("/django/hello/")


def later(request):
    LATER.append(request.reply_channel.name)
    raise ResponseLater()


def no_content(request):
    return HttpResponse(b"ignored", status=204)
