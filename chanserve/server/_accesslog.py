"""The access log: one line per HTTP request and per WebSocket connect, reject and disconnect."""

import re
import sys
import time

# What may not reach a log line as is: controls (C0, DEL, C1), quotes, backslashes.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\]')


def _escape_char(match):
    char = match.group()
    return "\\" + char if char in '"\\' else f"\\x{ord(char):02x}"


def escape(text):
    """``text`` made safe for one log line: controls as ``\\xHH``, ``"`` and ``\\`` escaped."""
    return _UNSAFE.sub(_escape_char, text)


class AccessLog:
    """
    Write access log lines to ``path`` (appending), or to standard output for ``"-"``.

    Lines look like the common log format, with the duration in seconds last::

        127.0.0.1:53012 - - [25/Nov/2026:12:00:00 +0000] "GET /chat/?x=1" 200 1043 0.004

    The (decoded) path can hold anything a client percent-encoded: control
    characters, quotes and backslashes are escaped, so one request is
    always one line.
    """

    def __init__(self, path, clock):
        self._clock = clock
        if hasattr(path, "write"):
            self._file, self._owned = path, False
        elif path == "-":
            self._file, self._owned = sys.stdout, False
        else:
            self._file, self._owned = open(path, "a", buffering=1, encoding="utf-8"), True
        self._second = None
        self._stamp = ""

    def _now(self):
        now = int(self._clock.seconds())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
        return self._stamp

    @staticmethod
    def _who(client):
        if not client:
            return "-"
        return f"{client[0]}:{client[1]}"

    def http(self, duration, client, method, path, query, status, size):
        """Log one finished (or abandoned) HTTP request."""
        target = path if not query else f"{path}?{query.decode('latin-1')}"
        if _UNSAFE.search(target):
            target = escape(target)
        self._file.write(f'{self._who(client)} - - [{self._now()}] "{method} {target}" '
                         f"{status} {size} {duration:.3f}\n")

    def refused(self, client, status, reason):
        """Log a request refused before it could be parsed (400, 408, 413, 431...)."""
        self._file.write(f'{self._who(client)} - - [{self._now()}] "- -" {status} - - {reason}\n')

    def websocket(self, action, client, path, code, duration=None):
        """Log ``WSCONNECT``, ``WSREJECT`` (code: the HTTP status) or ``WSDISCONNECT``."""
        tail = "-" if duration is None else f"{duration:.3f}"
        if _UNSAFE.search(path):
            path = escape(path)
        self._file.write(f'{self._who(client)} - - [{self._now()}] "{action} {path}" '
                         f"{code if code is not None else '-'} - {tail}\n")

    def close(self):
        """Close the file (when we opened it)."""
        if self._owned:
            self._file.close()
        else:
            self._file.flush()
