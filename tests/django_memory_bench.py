"""
Memory of the Django bridge under big bodies, against a real ``twistd chanserve``:

    .venv/bin/python tests/django_memory_bench.py [--upload-mb 100] [--stream-mb 1024] [--read-delay 0.002] [--redis]

1. a multipart upload of ``--upload-mb`` MiB: the server's peak RSS must stay
   within 100 MiB of idle (Django's upload handlers spill it to disk);
2. a streaming response of ``--stream-mb`` MiB read slowly (``--read-delay``
   seconds per MiB): the server's peak RSS must stay within 32 MiB of idle
   (``view_consumer`` waits for the interface server's acknowledgements, so
   only about two 256 KiB chunks are ever in flight; without them the server
   buffered hundreds of MiB).

With ``--redis`` the interface server (``--noworker``, measured) and the
worker (``--worker-only``) are two processes sharing a fresh ``redis-server``:
the acknowledgements then cross processes.

Prints the numbers; exits 1 when a limit is exceeded. Takes about 5 s
(plus the read delays: ``--read-delay 0.01`` reads 1 GiB in about 12 s).
"""

import argparse
import hashlib
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.twistd_process import TwistdProcess  # noqa: E402

LIMIT_MB = 100
STREAM_LIMIT_MB = 32


def memory_mb(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["VmRSS"][0]) // 1024, int(fields["VmHWM"][0]) // 1024


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def upload(port, pid, size_mb):
    boundary = "chanserveMemoryBench"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = os.urandom(1 << 20)

    def body():
        yield head
        for _ in range(size_mb):
            yield block
        yield tail

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    reset_peak(pid)
    idle, _ = memory_mb(pid)
    started = time.monotonic()
    connection.request("POST", "/django/upload/", body=body(), headers={
        "Host": "testserver", "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + (size_mb << 20) + len(tail))})
    response = connection.getresponse()
    result = json.loads(response.read())["files"]["file"]
    elapsed = time.monotonic() - started
    _, peak = memory_mb(pid)
    expected = hashlib.sha256(block * size_mb).hexdigest() if size_mb <= 256 else None
    ok = result["size"] == size_mb << 20 and result["on_disk"] and (
        expected is None or result["sha256"] == expected)
    print(f"upload {size_mb} MiB: {elapsed:.1f} s, idle RSS {idle} MiB, peak {peak} MiB "
          f"(+{peak - idle}), stored on disk: {result['on_disk']}, intact: {ok}")
    return ok and peak - idle < LIMIT_MB


def stream(port, pid, size_mb, delay):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    reset_peak(pid)
    idle, _ = memory_mb(pid)
    started = time.monotonic()
    connection.request("GET", f"/django/stream/?count={size_mb}&size={1 << 20}",
                       headers={"Host": "testserver"})
    response = connection.getresponse()
    received = 0
    while True:
        chunk = response.read(1 << 20)
        if not chunk:
            break
        received += len(chunk)
        if delay:
            time.sleep(delay)
    elapsed = time.monotonic() - started
    _, peak = memory_mb(pid)
    print(f"stream {size_mb} MiB read with {delay} s/MiB: {elapsed:.1f} s, idle RSS {idle} MiB, "
          f"peak {peak} MiB (+{peak - idle}), received {received >> 20} MiB")
    return received == size_mb << 20 and peak - idle < STREAM_LIMIT_MB


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upload-mb", type=int, default=100)
    parser.add_argument("--stream-mb", type=int, default=1024)
    parser.add_argument("--read-delay", type=float, default=0.002)
    parser.add_argument("--redis", action="store_true",
                        help="interface server and worker in two processes over Redis")
    args = parser.parse_args()
    redis = worker = None
    if args.redis:
        from tests.redis_server import RedisServer
        redis = RedisServer()
        env = {"CHANSERVE_DJANGO_REDIS": redis.url}
        worker = TwistdProcess("tests.project.settings_django", ["--worker-only"], listen=False,
                               env=env, migrate=True).start()
        proc = TwistdProcess("tests.project.settings_django", ["--noworker"], env=env).start()
    else:
        proc = TwistdProcess("tests.project.settings_django", migrate=True).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=30)
        connection.request("GET", "/django/hello/", headers={"Host": "testserver"})
        connection.getresponse().read()
        pid = proc.process.pid
        results = [upload(proc.port, pid, args.upload_mb),
                   stream(proc.port, pid, args.stream_mb, args.read_delay)]
    finally:
        proc.stop()
        if worker is not None:
            worker.stop()
        if redis is not None:
            redis.stop()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
