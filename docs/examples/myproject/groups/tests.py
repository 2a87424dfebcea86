# In tests.py
from django.test import SimpleTestCase

from chanserve.testing import ConsumerClient
from myproject.groups.routing import channel_routing


class ChatTests(SimpleTestCase):

    def test_group_chat(self):
        with ConsumerClient(channel_routing) as client:
            # Connecting joins the "chat" group; the socket is accepted.
            client.send_and_consume("websocket.connect", path="/chat/", order=0)
            self.assertEqual(client.receive(), {"accept": True})
            # A message goes to every member of the group: here, us.
            client.send_and_consume("websocket.receive", path="/chat/", text="hello", order=1)
            self.assertEqual(client.receive(), {"text": "[user] hello"})
            # After disconnecting we are no longer in the group.
            client.send_and_consume("websocket.disconnect", path="/chat/", code=1000, order=2)
            client.send("websocket.receive", path="/chat/", text="anyone?",
                        reply_channel="chanserve.other!abc")
            client.consume()
            self.assertIsNone(client.receive())
