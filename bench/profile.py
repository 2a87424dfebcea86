"""
Where a server spends its time under one workload: samples it with py-spy
(installed in the peers' venv) while the workload runs, then prints the
functions with the most samples on top of the stack (self) and the
chanserve functions with the most samples anywhere on the stack (inclusive).

Usage: python bench/profile.py [--server chanserve] [--workload echo|fanout|hello|upload]
       [--seconds 8] [--top 25]
"""

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402
import http_bench  # noqa: E402
import servers  # noqa: E402
import ws  # noqa: E402

PY_SPY = os.path.join(c.PEER_VENV, "bin", "py-spy")


def frame_name(frame):
    # raw format frames: "function (path/to/file.py:line)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def category(stack, leaf):
    """A coarse owner of one sample, for a one-screen picture."""
    if "django/" in stack and ("AsgiHandler.__call__" in stack or "get_response" in stack):
        return "Django request cycle (middleware, view, signals)"
    if any(x in leaf for x in ("threading.py", "_threadworker", "queue.py", "threadpool.py",
                               "internet/threads.py", "_team.py")):
        return "thread hand-offs (pool queue, callFromThread, blockingCallFromThread)"
    if "chanserve/layers" in leaf:
        return "channel layer (send/receive/validate/copy)"
    if "chanserve/server" in leaf:
        return "interface server"
    if any(x in leaf for x in ("chanserve/worker", "chanserve/routing", "chanserve/channel")):
        return "worker, routing, held sends"
    if "chanserve/" in leaf:
        return "other chanserve (" + leaf.split("(chanserve/")[-1].split(")")[0] + ")"
    if "autobahn/" in leaf:
        return "autobahn (WebSocket frames, handshake)"
    if "twisted/internet/defer" in leaf:
        return "Twisted Deferreds"
    if "twisted/" in leaf:
        return "Twisted reactor, tcp, logging context"
    if "django/" in leaf:
        return "Django (outside a request)"
    return "other (" + leaf.split(" (")[0] + ")"


def summarise(raw_path, top):
    threads = collections.Counter()
    cats = collections.Counter()
    self_counts = collections.Counter()
    incl = collections.Counter()
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            parts = stack.split(";")
            if parts[0].startswith("thread ("):
                kind = parts[0].split(": ", 1)[-1].rstrip("0123456789-")
                threads[kind] += n
                parts = parts[1:]
            frames = [frame_name(x) for x in parts] or ["?"]
            self_counts[frames[-1]] += n
            cats[category(";".join(frames), frames[-1])] += n
            for fr in set(frames):
                if "chanserve/" in fr or "(chanserve" in fr:
                    incl[fr] += n
    print(f"\n{total} samples; by thread: " + ", ".join(
        f"{k} {100 * v / total:.0f}%" for k, v in threads.most_common()))
    print("\n-- by owner (self time)")
    for k, n in cats.most_common(12):
        print(f"{100 * n / total:5.1f}%  {k}")
    print("\n-- self (top of stack)")
    for fr, n in self_counts.most_common(top):
        print(f"{100 * n / total:5.1f}%  {fr}")
    print("\n-- chanserve functions, inclusive")
    for fr, n in incl.most_common(top):
        print(f"{100 * n / total:5.1f}%  {fr}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="chanserve")
    p.add_argument("--workload", default="echo", choices=["echo", "fanout", "hello", "upload"])
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--rate", type=int, default=250)
    p.add_argument("--all-threads", action="store_true",
                   help="sample every thread (default: only the thread holding the GIL, "
                        "i.e. where a GIL-bound server's CPU goes)")
    args = p.parse_args()
    if not os.path.exists(PY_SPY):
        sys.exit(f"py-spy not found at {PY_SPY}: {c.PEER_VENV}/bin/pip install py-spy")
    servers.raise_nofile()
    raw = os.path.join(tempfile.mkdtemp(prefix="chanserve-bench-"), "profile.txt")
    with servers.Server(args.server) as srv:
        pids = srv.pids()
        target = pids[-1] if args.server == "gunicorn" else pids[0]
        spy = subprocess.Popen(
            [PY_SPY, "record", "--pid", str(target), "--duration", str(args.seconds), "--rate",
             str(args.rate), "--format", "raw", "--threads", "--nonblocking", "--output", raw]
            + ([] if args.all_threads else ["--gil"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        if args.workload == "echo":
            print(asyncio.run(ws.echo(srv.port, warmup=0.2, duration=args.seconds, server=srv)))
        elif args.workload == "fanout":
            print(asyncio.run(ws.fanout(srv.port, rounds=max(10, args.seconds * 5))))
        else:
            base = f"http://127.0.0.1:{srv.port}"
            if args.workload == "hello":
                print(http_bench.wrk(base + "/hello/", 32, args.seconds))
            else:
                lua = os.path.join(os.path.dirname(raw), "upload.lua")
                with open(lua, "w") as f:
                    f.write(http_bench.UPLOAD_LUA)
                print(http_bench.wrk(base + "/upload/", 8, args.seconds, lua))
        spy.wait(args.seconds + 30)
    summarise(raw, args.top)


if __name__ == "__main__":
    threading.stack_size(0)
    main()
