"""
A small, cheap WebSocket client on plain asyncio (RFC 6455 framing, masked
client frames, no extensions), the same for every server under test, so
the client costs every server alike and stays well below the servers'
cost per message.
"""

import asyncio
import base64
import os

_HANDSHAKE = (
    "GET {path} HTTP/1.1\r\n"
    "Host: {host}:{port}\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n"
)


class WS(asyncio.Protocol):
    """One client connection; ``on_message(ws, payload_bytes)`` per data frame."""

    def __init__(self, host, port, path, on_message):
        self.host, self.port, self.path = host, port, path
        self.on_message = on_message
        self.transport = None
        self.opened = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.open = False
        self.buf = bytearray()
        self.mask = os.urandom(4)
        self._masks = {}
        self.t0 = 0.0
        self.fragments = None

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(_HANDSHAKE.format(path=self.path, host=self.host, port=self.port,
                                          key=key).encode())

    def connection_lost(self, exc):
        self.open = False
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data):
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:buf.find(b"\r\n")])
            if b" 101 " not in status + b" ":
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(f"handshake refused: {status!r}"))
                self.transport.close()
                return
            del buf[:end + 4]
            self.open = True
            self.opened.set_result(self)
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            masked = b1 & 0x80
            if masked:
                head += 4
            if n - pos < head + length:
                break
            payload = bytes(buf[pos + head:pos + head + length])
            if masked:
                key = bytes(buf[pos + head - 4:pos + head])
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            pos += head + length
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode in (1, 2):
                if fin:
                    self.on_message(self, payload)
                else:
                    self.fragments = [payload]
            elif opcode == 0 and self.fragments is not None:
                self.fragments.append(payload)
                if fin:
                    payload, self.fragments = b"".join(self.fragments), None
                    self.on_message(self, payload)
            elif opcode == 8:
                if self.transport is not None and not self.transport.is_closing():
                    self._send(0x88, payload[:2])
                    self.transport.close()
            elif opcode == 9:
                self._send(0x8A, payload)
        if pos:
            del buf[:pos]

    def _mask_int(self, n):
        m = self._masks.get(n)
        if m is None:
            m = self._masks[n] = int.from_bytes((self.mask * (n // 4 + 1))[:n], "big")
        return m

    def _send(self, first, payload):
        n = len(payload)
        if n < 126:
            header = bytes((first, 0x80 | n))
        elif n < 65536:
            header = bytes((first, 0xFE)) + n.to_bytes(2, "big")
        else:
            header = bytes((first, 0xFF)) + n.to_bytes(8, "big")
        body = (int.from_bytes(payload, "big") ^ self._mask_int(n)).to_bytes(n, "big") if n else b""
        self.transport.write(header + self.mask + body)

    def send_text(self, payload):
        """Send ``payload`` (UTF-8 bytes) as one text frame."""
        self._send(0x81, payload)

    def close(self):
        if self.transport is not None and not self.transport.is_closing():
            if self.open:
                self._send(0x88, (1000).to_bytes(2, "big"))
            self.transport.close()


async def connect(port, path, on_message, host="127.0.0.1", timeout=20.0):
    loop = asyncio.get_running_loop()
    _, ws = await asyncio.wait_for(
        loop.create_connection(lambda: WS(host, port, path, on_message), host, port), timeout)
    await asyncio.wait_for(ws.opened, timeout)
    return ws


async def connect_many(port, path, count, on_message, concurrency=50, timeout=60.0):
    """Open ``count`` connections, at most ``concurrency`` handshakes at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def one():
        async with sem:
            return await connect(port, path, on_message)

    return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), timeout)


async def close_all(conns, timeout=5.0):
    for ws in conns:
        ws.close()
    if conns:
        await asyncio.wait([ws.closed for ws in conns], timeout=timeout)
