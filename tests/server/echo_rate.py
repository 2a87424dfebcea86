"""
A quick round-trip rate for the interface server (not a test; the real benchmarks are in bench/).

    .venv/bin/python -m tests.server.echo_rate [--connections 10] [--seconds 5]

Starts a process running an ``InterfaceServer`` and an in-memory layer with
a minimal consumer answering on the layer directly (no worker, no Django),
then drives it from this process with ``--connections`` keep-alive HTTP
connections and then as many WebSockets, each doing sequential round trips,
and prints round trips per second for each.
"""

import argparse
import base64
import os
import socket
import subprocess
import sys
import time

_SERVER = r"""
import sys
from twisted.internet import reactor
from chanserve.layers import InMemoryChannelLayer
from chanserve.server import InterfaceServer

layer = InMemoryChannelLayer(reactor=reactor, capacity=10000)
server = InterfaceServer(layer, reactor, ["tcp:%s:interface=127.0.0.1" % sys.argv[1]],
                         ping_interval=0)
OK = {"status": 200, "headers": [[b"content-type", b"text/plain"]], "content": b"hello",
      "more_content": False}
CHANNELS = ["http.request", "websocket.connect", "websocket.receive", "websocket.disconnect"]

def handle(channel, message):
    if channel == "http.request":
        layer.send(message["reply_channel"], OK)
    elif channel == "websocket.connect":
        layer.send(message["reply_channel"], {"accept": True})
    elif channel == "websocket.receive":
        layer.send(message["reply_channel"], {"text": message["text"]})

def pump():
    while True:
        box = []
        d = layer.receive(CHANNELS)
        d.addBoth(box.append)
        if not box:
            d.addCallback(lambda _: (handle(*box[0]), pump()))
            return
        handle(*box[0])

server.startService()
pump()
reactor.run()
"""

_REQUEST = (b"GET /bench HTTP/1.1\r\nHost: localhost\r\nUser-Agent: echo-rate\r\n"
            b"Accept: */*\r\n\r\n")
_MASK = b"\x01\x02\x03\x04"
_PAYLOAD = b"hello world"
_FRAME = (bytes([0x81, 0x80 | len(_PAYLOAD)]) + _MASK
          + bytes(b ^ _MASK[i % 4] for i, b in enumerate(_PAYLOAD)))


def _drive(mode, port, connections, seconds):
    from twisted.internet import protocol, reactor

    count = [0]

    class HTTP(protocol.Protocol):
        def connectionMade(self):
            self.buf = b""
            self.transport.write(_REQUEST)

        def dataReceived(self, data):
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0 or len(self.buf) < end + 4 + 5:
                    return
                self.buf = self.buf[end + 9:]
                count[0] += 1
                self.transport.write(_REQUEST)

    class WS(protocol.Protocol):
        def connectionMade(self):
            self.buf, self.open = b"", False
            key = base64.b64encode(os.urandom(16))
            self.transport.write(
                b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key
                + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")

        def dataReceived(self, data):
            self.buf += data
            if not self.open:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.buf, self.open = self.buf[end + 4:], True
                self.transport.write(_FRAME)
            while len(self.buf) >= 2 + len(_PAYLOAD):
                self.buf = self.buf[2 + len(_PAYLOAD):]
                count[0] += 1
                self.transport.write(_FRAME)

    factory = protocol.ClientFactory()
    factory.protocol = HTTP if mode == "http" else WS
    for _ in range(connections):
        reactor.connectTCP("127.0.0.1", port, factory)
    result = []

    def start():
        count[0] = 0
        began = time.perf_counter()

        def stop():
            result.append(count[0] / (time.perf_counter() - began))
            reactor.stop()
        reactor.callLater(seconds, stop)
    reactor.callLater(1.0, start)
    reactor.run()
    return result[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mode", choices=["http", "ws"])
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.mode:
        rate = _drive(args.mode, args.port, args.connections, args.seconds)
        print(f"{args.mode}: {args.connections} connections, {rate:.0f} round trips/s")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port)], env=env)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        for mode in ("http", "ws"):
            subprocess.run([sys.executable, "-m", "tests.server.echo_rate", "--mode", mode,
                            "--port", str(port), "--connections", str(args.connections),
                            "--seconds", str(args.seconds)], env=env, check=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
