"""The views every server under test serves."""

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt


def hello(request):
    """A short text through URL routing and the default middleware."""
    return HttpResponse(b"Hello, world!\n", content_type="text/plain")


@csrf_exempt
def upload(request):
    """Read a POST body in 64 KiB pieces (never all in memory); answer its size."""
    total = 0
    while True:
        chunk = request.read(65536)
        if not chunk:
            break
        total += len(chunk)
    return HttpResponse(f"{total}\n".encode(), content_type="text/plain")
