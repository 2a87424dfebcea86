"""
WebSocket workloads, chanserve side by side with Daphne 4 + Channels 4 and
uvicorn + Channels 4, the same consumer logic, the same client
(bench/wsclient.py):

echo    50 connections, each sends a frame and waits for its echo, again and
        again: round trips/s over a fixed window, p50/p99 latency, and the
        server's CPU time per 1,000 round trips
fanout  1,000 sockets in one group; one member sends, the group gets it:
        time until every member has it (median over rounds), p50/p99 of
        the single deliveries, lost deliveries
idle    RSS growth per idle WebSocket (5,000 sockets, each after one echo)

Every server is started fresh on a free 127.0.0.1 port and killed after.
Usage: python bench/ws.py [--only echo,fanout,idle] [--sides a,b] [--rounds N]
"""

import argparse
import asyncio
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402
import servers  # noqa: E402
import wsclient  # noqa: E402

DEFAULT_SIDES = ("chanserve", "chanserve-sync", "daphne", "uvicorn", "uvicorn-fast")
PEERS = ("daphne", "uvicorn", "uvicorn-fast")
PAYLOAD = b"hello, echo! 0123456789abcdefghij"


async def echo(port, conns=50, warmup=1.0, duration=5.0, server=None):
    state = {"phase": 0, "count": 0, "bad": 0}
    lat = []
    perf = time.perf_counter

    def on_message(ws, payload):
        now = perf()
        if payload != PAYLOAD:
            state["bad"] += 1
        phase = state["phase"]
        if phase == 1:
            lat.append(now - ws.t0)
            state["count"] += 1
        elif phase == 2:
            return
        ws.t0 = now
        ws.send_text(PAYLOAD)

    sockets = await wsclient.connect_many(port, "/echo/", conns, on_message)
    for ws in sockets:
        ws.t0 = perf()
        ws.send_text(PAYLOAD)
    await asyncio.sleep(warmup)
    cpu0 = server.cpu_seconds() if server else 0.0
    ccpu0 = time.process_time()
    state["phase"] = 1
    t0 = perf()
    await asyncio.sleep(duration)
    state["phase"] = 2
    elapsed = perf() - t0
    cpu = (server.cpu_seconds() - cpu0) if server else 0.0
    ccpu = time.process_time() - ccpu0
    await wsclient.close_all(sockets)
    lat.sort()
    n = state["count"]
    return {
        "rps": n / elapsed,
        "p50_ms": 1000 * c.percentile(lat, 50),
        "p99_ms": 1000 * c.percentile(lat, 99),
        "server_cpu_ms_per_1k": 1e6 * cpu / n if n else float("nan"),
        "client_cpu_pct": 100 * ccpu / elapsed,
        "round_trips": n,
        "wrong_payloads": state["bad"],
    }


async def fanout(port, members=1000, rounds=20, warmup_rounds=2, timeout=10.0):
    perf = time.perf_counter
    state = {"marker": None, "t0": 0.0, "got": 0, "done": None}
    lat = []

    def on_message(ws, payload):
        if state["marker"] is not None and payload == state["marker"]:
            lat.append(perf() - state["t0"])
            state["got"] += 1
            if state["got"] == members and not state["done"].done():
                state["done"].set_result(None)

    sockets = await wsclient.connect_many(port, "/fanout/", members, on_message)
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    alls, pooled, lost = [], [], 0
    for r in range(warmup_rounds + rounds):
        lat.clear()
        state.update(marker=f"fanout round {r:04d}".encode(), got=0, done=loop.create_future())
        state["t0"] = perf()
        sockets[(r * 37) % members].send_text(state["marker"])
        try:
            await asyncio.wait_for(state["done"], timeout)
        except asyncio.TimeoutError:
            pass
        if r >= warmup_rounds:
            lost += members - state["got"]
            pooled.extend(lat)
            alls.append(max(lat) if len(lat) == members else float("inf"))
        state["marker"] = None
        await asyncio.sleep(0.1)
    await wsclient.close_all(sockets)
    pooled.sort()
    return {
        "all_median_ms": 1000 * c.median(alls),
        "all_max_ms": 1000 * max(alls),
        "p50_ms": 1000 * c.percentile(pooled, 50),
        "p99_ms": 1000 * c.percentile(pooled, 99),
        "lost": lost,
        "deliveries": len(pooled),
    }


async def idle(port, server, count=5000, settle=2.0):
    got = {"n": 0}

    def on_message(ws, payload):
        got["n"] += 1

    async def echo_once(socks, want, batch=50):
        # In batches, so no server's queue overflows (chanserve closes sockets
        # with 1013 when websocket.receive is over its capacity).
        deadline = time.monotonic() + 60
        for i in range(0, len(socks), batch):
            for ws in socks[i:i + batch]:
                ws.send_text(PAYLOAD)
            target = got["n"] + len(socks[i:i + batch])
            while got["n"] < target and time.monotonic() < deadline:
                await asyncio.sleep(0.002)

    warm = await wsclient.connect_many(port, "/echo/", 200, on_message)
    await echo_once(warm, 200)
    await wsclient.close_all(warm)
    await asyncio.sleep(settle)
    rss0 = server.rss()
    got["n"] = 0
    socks = await wsclient.connect_many(port, "/echo/", count, on_message, concurrency=100, timeout=120)
    await echo_once(socks, count)
    await asyncio.sleep(settle)
    rss1 = server.rss()
    answered = got["n"]
    await wsclient.close_all(socks, timeout=10)
    return {
        "rss_before_mib": rss0 / 2**20,
        "rss_after_mib": rss1 / 2**20,
        "kib_per_socket": (rss1 - rss0) / count / 1024,
        "sockets": count,
        "answered": answered,
    }


def run_side(side, what, log_dir):
    out = {}
    if what & {"echo", "fanout"}:
        with servers.Server(side, log_dir=log_dir) as srv:
            if "echo" in what:
                out["echo"] = asyncio.run(echo(srv.port, server=srv))
            if "fanout" in what:
                out["fanout"] = asyncio.run(fanout(srv.port))
    if "idle" in what:
        with servers.Server(side, log_dir=log_dir) as srv:
            out["idle"] = asyncio.run(idle(srv.port, srv))
    gc.collect()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="echo,fanout,idle")
    p.add_argument("--sides", default=",".join(DEFAULT_SIDES))
    p.add_argument("--rounds", type=int, default=3, help="rounds of echo and fanout (idle: 1)")
    p.add_argument("--max-seconds", type=float, default=900.0)
    args = p.parse_args()
    only = set(args.only.split(","))
    sides = [s for s in args.sides.split(",") if s]
    c.require_peers()
    servers.raise_nofile()
    log_dir = os.path.join(c.RESULTS, "logs")
    os.makedirs(log_dir, exist_ok=True)
    load = c.MachineLoad()
    deadline = time.monotonic() + args.max_seconds
    results = {s: {"echo": [], "fanout": [], "idle": []} for s in sides}
    for rnd in range(args.rounds):
        order = sides if rnd % 2 == 0 else sides[::-1]
        for side in order:
            what = only & {"echo", "fanout"}
            if rnd == 0 and "idle" in only:
                what = what | {"idle"}
            if not what:
                continue
            try:
                out = run_side(side, what, log_dir)
            except Exception as e:  # one broken server must not hide the others' figures
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
    report(results, sides, only, loadinfo)


def _med(runs, key):
    vals = [r[key] for r in runs]
    return c.median(vals) if vals else float("nan")


def report(results, sides, only, loadinfo):
    print(f"\n== ws: WebSocket workloads (median of rounds)\n   command: {' '.join(sys.argv)}")
    base = "chanserve"
    if "echo" in only:
        print("\n-- echo: 50 connections, round trips/s")
        rows = []
        for s in sides:
            r = results[s]["echo"]
            if not r:
                rows.append([s, "failed", "", "", "", ""])
                continue
            rows.append([s, f"{_med(r, 'rps'):,.0f}", f"{_med(r, 'p50_ms'):.2f}", f"{_med(r, 'p99_ms'):.2f}",
                         f"{_med(r, 'server_cpu_ms_per_1k'):.0f}", _ratio(results, base, s, "echo", "rps")])
        c.print_table(["server", "round trips/s", "p50 ms", "p99 ms", "server CPU ms/1k", "chanserve / this"], rows)
    if "fanout" in only:
        print("\n-- fanout: 1,000 sockets in one group; time until all have the message")
        rows = []
        for s in sides:
            r = results[s]["fanout"]
            if not r:
                rows.append([s, "failed", "", "", "", ""])
                continue
            rows.append([s, f"{_med(r, 'all_median_ms'):.1f}", f"{_med(r, 'p50_ms'):.1f}",
                         f"{_med(r, 'p99_ms'):.1f}", sum(x["lost"] for x in r),
                         _ratio(results, base, s, "fanout", "p99_ms")])
        c.print_table(["server", "all have it ms", "p50 ms", "p99 ms", "lost", "chanserve p99 / this"], rows)
    if "idle" in only:
        print("\n-- idle: RSS growth per idle WebSocket (5,000 sockets)")
        rows = []
        for s in sides:
            r = results[s]["idle"]
            if not r:
                rows.append([s, "failed", "", "", "", ""])
                continue
            rows.append([s, f"{_med(r, 'kib_per_socket'):.1f}", f"{_med(r, 'rss_before_mib'):.1f}",
                         f"{_med(r, 'rss_after_mib'):.1f}", f"{min(x['answered'] for x in r)}/{r[0]['sockets']}",
                         _ratio(results, base, s, "idle", "kib_per_socket")])
        c.print_table(["server", "KiB/socket", "RSS before MiB", "RSS after MiB", "echoed", "chanserve / this"],
                      rows)
    c.print_targets(ws_targets(results, only))
    print(c.fmt_load(loadinfo))
    path = c.save("ws", {"results": results, "load": loadinfo, "argv": sys.argv})
    print(f"(saved {os.path.relpath(path, c.ROOT)})")


def _r(results, a, b, what, key):
    ra, rb = results.get(a, {}).get(what), results.get(b, {}).get(what)
    if not ra or not rb:
        return float("nan")
    return _med(ra, key) / _med(rb, key)


def ws_targets(results, only):
    t = []
    if "echo" in only:
        t.append(("echo round trips/s, chanserve / Daphne", _r(results, "chanserve", "daphne", "echo", "rps"),
                  "ge", 2.0, "x"))
        for u in ("uvicorn", "uvicorn-fast"):
            t.append((f"echo round trips/s, chanserve / {u}", _r(results, "chanserve", u, "echo", "rps"),
                      "ge", 1.0, "x"))
    if "fanout" in only:
        t.append(("fan-out p99, chanserve / Daphne", _r(results, "chanserve", "daphne", "fanout", "p99_ms"),
                  "le", 0.25, "x"))
    if "idle" in only:
        t.append(("idle KiB per socket, chanserve / Daphne",
                  _r(results, "chanserve", "daphne", "idle", "kib_per_socket"), "le", 0.5, "x"))
    return t


def _ratio(results, base, side, what, key):
    if base not in results:
        return ""
    a, b = results[base][what], results[side][what]
    if not a or not b or side == base:
        return ""
    return f"{_med(a, key) / _med(b, key):.2f}x"


if __name__ == "__main__":
    main()
