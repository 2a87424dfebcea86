"""Helpers for the interface server's tests: an in-memory harness and WebSocket framing."""

import base64
import os
import struct

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection

from chanserve.layers import InMemoryChannelLayer
from chanserve.server import InterfaceServer


class Harness:
    """
    An L{InterfaceServer} on a L{MemoryReactorClock} with an in-memory layer.

    C{connect()} gives a protocol on a L{StringTransportWithDisconnection};
    C{next(channel)} takes the next message the server sent to a channel.
    """

    def __init__(self, layer_options=None, **options):
        self.reactor = MemoryReactorClock()
        self.layer = InMemoryChannelLayer(reactor=self.reactor, **(layer_options or {}))
        self.server = InterfaceServer(self.layer, self.reactor, ["tcp:8000"], **options)
        self.server.startService()
        self.factory = self.reactor.tcpServers[0][1]

    def connect(self, peer=("10.0.0.7", 50000)):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransportWithDisconnection(
            peerAddress=IPv4Address("TCP", *peer),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8000))
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def next(self, channel):
        """The next message waiting on C{channel}, or None."""
        results = []
        d = self.layer.receive([channel])
        d.addBoth(results.append)
        if not results:
            d.cancel()
            return None
        return results[0][1]

    def reply(self, message, content):
        """Send C{content} on C{message}'s reply channel."""
        results = []
        self.layer.send(message["reply_channel"], content).addBoth(results.append)
        assert results == [None], results

    def stop(self):
        """Stop the server, advancing the clock past the shutdown deadline."""
        d = self.server.stopService()
        self.reactor.advance(self.server.shutdown_timeout + 1)
        return d


def client_frame(opcode, payload, fin=True, mask=b"\x37\xfa\x21\x3d", rsv=0):
    """A masked client-to-server WebSocket frame."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def server_frames(data):
    """Split unmasked server frames: a list of (opcode, payload), and the leftover bytes."""
    frames = []
    while len(data) >= 2:
        opcode = data[0] & 0x0F
        n = data[1] & 0x7F
        offset = 2
        if n == 126:
            if len(data) < 4:
                break
            n = struct.unpack("!H", data[2:4])[0]
            offset = 4
        elif n == 127:
            if len(data) < 10:
                break
            n = struct.unpack("!Q", data[2:10])[0]
            offset = 10
        if len(data) < offset + n:
            break
        frames.append((opcode, data[offset:offset + n]))
        data = data[offset + n:]
    return frames, data


def upgrade_request(path=b"/ws/", extra=b""):
    """A WebSocket opening handshake request."""
    key = base64.b64encode(os.urandom(16))
    return (b"GET " + path + b" HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
            b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")
