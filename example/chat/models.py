"""The one model of the example: a message said in a room."""

from django.conf import settings
from django.db import models


class ChatMessage(models.Model):
    """A chat message, saved by the ``chat-messages`` consumer before it is broadcast."""

    room = models.SlugField(max_length=50, db_index=True)
    message = models.TextField(max_length=2000)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self):
        return f"[{self.room}] {self.username}: {self.message}"

    def as_dict(self):
        """What the page and the WebSocket clients get."""
        return {
            "id": self.id,
            "room": self.room,
            "user": self.username,
            "message": self.message,
            "created": self.created.isoformat(),
        }

    @classmethod
    def history(cls, room, limit=50):
        """The last ``limit`` messages of ``room``, oldest first."""
        recent = cls.objects.filter(room=room).order_by("-created", "-id")[:limit]
        return list(reversed(recent))
