from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.utils.text import slugify

from .models import ChatMessage


@login_required
def index(request):
    """Pick a room (``?room=name`` goes there)."""
    name = slugify(request.GET.get("room", ""))
    if name:
        return redirect("room", room=name)
    rooms = (ChatMessage.objects.order_by().values_list("room", flat=True).distinct())
    return render(request, "chat/index.html", {"rooms": sorted(rooms)[:50]})


@login_required
def room(request, room):
    """
    The room's page: its history, then new messages live over a WebSocket.

    With ``?format=json``, just the history (the page catches up with it
    after its WebSocket reconnects).
    """
    history = [m.as_dict() for m in ChatMessage.history(room)]
    if request.GET.get("format") == "json":
        return JsonResponse({"room": room, "history": history})
    return render(request, "chat/room.html", {"room": room, "history": history})
