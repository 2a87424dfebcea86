"""
Cross-process WebSocket workloads over Redis, chanserve side by side with
Daphne 4 + Channels 4 + channels_redis 4 on the same Redis server (started
here on a free 127.0.0.1 port, flushed between runs):

echo    50 connections; each frame goes interface process -> Redis -> worker
        process -> Redis -> interface process and back to the socket
        (chanserve: `--noworker` + `--worker-only`; Channels 4: Daphne +
        `runworker bench-echo`)
fanout  1,000 sockets in one group, group sends through Redis; time until
        all have it, p50/p99, lost deliveries

Usage: python bench/redis_bench.py [--only echo,fanout] [--rounds N]
"""

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402
import servers  # noqa: E402
import ws  # noqa: E402

SIDES = ("chanserve-redis", "daphne-redis")


class RedisServer:
    def __init__(self):
        self.port = servers.free_port()
        self.dir = tempfile.mkdtemp(prefix="chanserve-bench-redis-")
        self.proc = None

    def __enter__(self):
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--maxclients", "10000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("redis-server did not start")

    def command(self, *args):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            parts = [f"*{len(args)}\r\n".encode()]
            for a in args:
                a = a.encode() if isinstance(a, str) else a
                parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
            s.sendall(b"".join(parts))
            return s.recv(65536)

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_side(side, only, redis, log_dir):
    url = f"redis://127.0.0.1:{redis.port}/0"
    redis.command("FLUSHALL")
    out = {}
    with servers.Server(side, log_dir=log_dir, extra_env={"CHANSERVE_BENCH_REDIS": url}) as srv:
        time.sleep(1.0)  # the worker process connects to Redis too
        if "echo" in only:
            out["echo"] = asyncio.run(ws.echo(srv.port, server=srv))
        if "fanout" in only:
            out["fanout"] = asyncio.run(ws.fanout(srv.port))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="echo,fanout")
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=600.0)
    args = p.parse_args()
    only = set(args.only.split(","))
    sides = [s for s in args.sides.split(",") if s]
    c.require_peers()
    servers.raise_nofile()
    log_dir = os.path.join(c.RESULTS, "logs")
    os.makedirs(log_dir, exist_ok=True)
    load = c.MachineLoad()
    deadline = time.monotonic() + args.max_seconds
    results = {s: {"echo": [], "fanout": []} for s in sides}
    with RedisServer() as redis:
        for rnd in range(args.rounds):
            order = sides if rnd % 2 == 0 else sides[::-1]
            for side in order:
                try:
                    out = run_side(side, only, redis, log_dir)
                except Exception as e:  # one broken server must not hide the other's figures
                    print(f"!! {side}: {e}", file=sys.stderr)
                    continue
                for k, v in out.items():
                    results[side][k].append(v)
                print(f"   round {rnd + 1} {side}: " + "; ".join(
                    f"{k} " + ", ".join(f"{kk}={vv:.1f}" if isinstance(vv, float) else f"{kk}={vv}"
                                        for kk, vv in v.items()) for k, v in out.items()), flush=True)
            if time.monotonic() > deadline:
                print(f"(stopping after {rnd + 1} rounds: time limit)")
                break
    loadinfo = load.report()
    print(f"\n== redis: cross-process WebSocket workloads over one Redis (median of rounds)\n"
          f"   command: {' '.join(sys.argv)}")
    base = "chanserve-redis"
    if "echo" in only:
        print("\n-- echo over Redis: 50 connections, round trips/s")
        rows = []
        for s in sides:
            r = results[s]["echo"]
            if not r:
                rows.append([s, "failed", "", "", "", ""])
                continue
            ratio = (f"{ws._med(results[base]['echo'], 'rps') / ws._med(r, 'rps'):.2f}x"
                     if s != base and results.get(base, {}).get("echo") else "")
            rows.append([s, f"{ws._med(r, 'rps'):,.0f}", f"{ws._med(r, 'p50_ms'):.2f}",
                         f"{ws._med(r, 'p99_ms'):.2f}", f"{ws._med(r, 'server_cpu_ms_per_1k'):.0f}", ratio])
        c.print_table(["server", "round trips/s", "p50 ms", "p99 ms", "server CPU ms/1k", "chanserve / this"],
                      rows)
    if "fanout" in only:
        print("\n-- fanout over Redis: 1,000 sockets in one group")
        rows = []
        for s in sides:
            r = results[s]["fanout"]
            if not r:
                rows.append([s, "failed", "", "", "", ""])
                continue
            ratio = (f"{ws._med(results[base]['fanout'], 'p99_ms') / ws._med(r, 'p99_ms'):.2f}x"
                     if s != base and results.get(base, {}).get("fanout") else "")
            rows.append([s, f"{ws._med(r, 'all_median_ms'):.1f}", f"{ws._med(r, 'p50_ms'):.1f}",
                         f"{ws._med(r, 'p99_ms'):.1f}", sum(x["lost"] for x in r), ratio])
        c.print_table(["server", "all have it ms", "p50 ms", "p99 ms", "lost", "chanserve p99 / this"], rows)
    t = []
    if "echo" in only:
        t.append(("echo over Redis round trips/s, chanserve / channels_redis",
                  ws._r(results, base, "daphne-redis", "echo", "rps"), "ge", 2.0, "x"))
    if "fanout" in only:
        t.append(("fan-out over Redis p99, chanserve / channels_redis",
                  ws._r(results, base, "daphne-redis", "fanout", "p99_ms"), "le", 0.5, "x"))
        for s in sides:
            if results[s]["fanout"]:
                t.append((f"fan-out over Redis lost deliveries, {s}",
                          float(sum(x["lost"] for x in results[s]["fanout"])), "le", 0, ""))
    c.print_targets(t)
    print(c.fmt_load(loadinfo))
    path = c.save("redis", {"results": results, "load": loadinfo, "argv": sys.argv})
    print(f"(saved {os.path.relpath(path, c.ROOT)})")


if __name__ == "__main__":
    main()
