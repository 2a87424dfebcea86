"""
Channel layer throughput: send -> receive messages/s through chanserve's
InMemoryChannelLayer (Twisted reactor) and Channels 4's InMemoryChannelLayer
(asyncio), measured side by side in one run.

Both sides run the same scenarios (bench/peers/layer_channels.py is the
Channels 4 side), each in its own process, in interleaved rounds, so that
noise from the rest of the machine hits both alike:

direct    one loop sends a message and receives it back (the receiver never
          waits): the layers' own cost per message, least framework around it
stream    one sender loop, one receiver loop, one channel; the sender yields
          to the event loop every 50 messages (and whenever the channel is full)
trickle   like stream, but the sender yields after every message, as a sender
          driven by socket events does
pingpong  a client sends on one channel and waits for the echo on another
reply     1,000 process-specific ("!") reply channels, as an interface server
          uses them; chanserve reads them with one loop on the process prefix,
          Channels 4 with one receiver per channel (its own idiom)
group     a group of 100 "!" members, 200 group sends (20,000 deliveries)
http      like stream, with an http.request-sized message (headers, body)

Usage: python bench/layer.py [--rounds N] [--scale F]
       python bench/layer.py --side chanserve ...   (one round, JSON; internal)
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SCENARIOS = ("direct", "stream", "trickle", "pingpong", "reply", "group", "http")
BATCH = 50


def ws_message():
    return {
        "reply_channel": "bench.proc!AbCdEfGhIjKlMnOpQrStUv",
        "path": "/chat/lobby/",
        "text": "hello, world! " * 4,
        "order": 7,
    }


def http_message():
    return {
        "reply_channel": "bench.proc!AbCdEfGhIjKlMnOpQrStUv",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hello/",
        "root_path": "",
        "query_string": b"a=1&b=2",
        "headers": [
            [b"host", b"127.0.0.1:8000"],
            [b"user-agent", b"bench/1.0"],
            [b"accept", b"text/html,application/xhtml+xml"],
            [b"accept-language", b"en-GB,en;q=0.9"],
            [b"accept-encoding", b"gzip, deflate"],
            [b"cookie", b"sessionid=abcdef0123456789; csrftoken=0123456789abcdef"],
            [b"connection", b"keep-alive"],
        ],
        "body": b"",
        "client": ["127.0.0.1", 54321],
        "server": ["127.0.0.1", 8000],
    }


def counts(scale):
    return {
        "direct": int(20000 * scale),
        "stream": int(20000 * scale),
        "trickle": int(10000 * scale),
        "pingpong": int(10000 * scale),
        "reply": int(20000 * scale),
        "group": int(200 * scale),
        "http": int(20000 * scale),
    }


# -- chanserve side ----------------------------------------------------------

def chanserve_side(args):
    from twisted.internet import defer, task

    from chanserve.exceptions import ChannelFull
    from chanserve.layers import InMemoryChannelLayer

    n = counts(args.scale)

    def run(reactor):
        def sleep0():
            return task.deferLater(reactor, 0)

        def new_layer():
            layer = InMemoryChannelLayer(reactor=reactor)
            layer.startService()
            return layer

        async def send_yielding(layer, channel, msg, i, batch=BATCH):
            while True:
                try:
                    await layer.send(channel, msg)
                    break
                except ChannelFull:
                    await sleep0()
            if i % batch == batch - 1:
                await sleep0()

        async def stream(msg, total, batch=BATCH):
            layer = new_layer()

            async def sender():
                for i in range(total):
                    await send_yielding(layer, "bench.stream", msg, i, batch)

            async def receiver():
                for _ in range(total):
                    await layer.receive(["bench.stream"])

            t0 = time.perf_counter()
            r = defer.Deferred.fromCoroutine(receiver())
            s = defer.Deferred.fromCoroutine(sender())
            await defer.gatherResults([r, s])
            dt = time.perf_counter() - t0
            layer.stopService()
            return total / dt

        async def direct(msg, total):
            layer = new_layer()
            t0 = time.perf_counter()
            for _ in range(total):
                await layer.send("bench.direct", msg)
                await layer.receive(["bench.direct"])
            dt = time.perf_counter() - t0
            layer.stopService()
            return total / dt

        async def pingpong(msg, total):
            layer = new_layer()

            async def echo():
                for _ in range(total):
                    _, m = await layer.receive(["bench.ping"])
                    await layer.send("bench.pong", m)

            async def client():
                for _ in range(total):
                    await layer.send("bench.ping", msg)
                    await layer.receive(["bench.pong"])

            t0 = time.perf_counter()
            e = defer.Deferred.fromCoroutine(echo())
            c = defer.Deferred.fromCoroutine(client())
            await defer.gatherResults([e, c])
            dt = time.perf_counter() - t0
            layer.stopService()
            return 2 * total / dt

        async def reply(msg, total):
            layer = new_layer()
            names = [(await layer.new_channel("bench.proc!")) for _ in range(1000)]

            async def sender():
                for i in range(total):
                    await send_yielding(layer, names[i % 1000], msg, i)

            async def receiver():
                for _ in range(total):
                    await layer.receive(["bench.proc!"])

            t0 = time.perf_counter()
            r = defer.Deferred.fromCoroutine(receiver())
            s = defer.Deferred.fromCoroutine(sender())
            await defer.gatherResults([r, s])
            dt = time.perf_counter() - t0
            layer.stopService()
            return total / dt

        async def group(msg, sends):
            layer = new_layer()
            members = [(await layer.new_channel("bench.proc!")) for _ in range(100)]
            for m in members:
                await layer.group_add("room", m)
            total = sends * len(members)

            async def sender():
                for _ in range(sends):
                    await layer.send_group("room", msg)
                    await sleep0()

            async def receiver():
                for _ in range(total):
                    await layer.receive(["bench.proc!"])

            t0 = time.perf_counter()
            r = defer.Deferred.fromCoroutine(receiver())
            s = defer.Deferred.fromCoroutine(sender())
            await defer.gatherResults([r, s])
            dt = time.perf_counter() - t0
            layer.stopService()
            return total / dt

        async def main():
            out = {}
            for name in args.scenarios:
                if name == "direct":
                    out[name] = await direct(ws_message(), n["direct"])
                elif name == "stream":
                    out[name] = await stream(ws_message(), n["stream"])
                elif name == "trickle":
                    out[name] = await stream(ws_message(), n["trickle"], 1)
                elif name == "http":
                    out[name] = await stream(http_message(), n["http"])
                elif name == "pingpong":
                    out[name] = await pingpong(ws_message(), n["pingpong"])
                elif name == "reply":
                    out[name] = await reply(ws_message(), n["reply"])
                elif name == "group":
                    out[name] = await group(ws_message(), n["group"])
            print(json.dumps(out))

        return defer.Deferred.fromCoroutine(main())

    task.react(run)


# -- driver ------------------------------------------------------------------

def driver(args):
    import _common as c

    c.require_peers()
    load = c.MachineLoad()
    here = os.path.abspath(__file__)
    peer = os.path.join(os.path.dirname(here), "peers", "layer_channels.py")
    common = ["--scale", str(args.scale), "--scenarios", ",".join(args.scenarios)]
    sides = {
        "chanserve": [c.chanserve_python(), here, "--side", "chanserve"] + common,
        "channels4": [c.PEER_PYTHON, peer] + common,
    }
    results = {side: {s: [] for s in args.scenarios} for side in sides}
    deadline = time.monotonic() + args.max_seconds
    for rnd in range(args.rounds):
        order = list(sides) if rnd % 2 == 0 else list(sides)[::-1]
        for side in order:
            env = c.chanserve_env() if side == "chanserve" else None
            out = c.run_json(sides[side], timeout=300, env=env)
            for s, v in out.items():
                results[side][s].append(v)
        if time.monotonic() > deadline:
            print(f"(stopping after {rnd + 1} rounds: time limit)")
            break
    loadinfo = c.MachineLoad.report(load)

    print("\n== layer: in-memory channel layer, send -> receive (messages/s, median of rounds; best in brackets)")
    print(f"   command: {' '.join(sys.argv)}")
    rows = []
    summary = {}
    for s in args.scenarios:
        cs = c.median(results["chanserve"][s])
        ch = c.median(results["channels4"][s])
        ratio = cs / ch if ch else float("nan")
        summary[s] = {"chanserve": cs, "channels4": ch, "ratio": ratio,
                      "chanserve_rounds": results["chanserve"][s],
                      "channels4_rounds": results["channels4"][s]}
        rows.append([s, f"{cs:,.0f} [{max(results['chanserve'][s]):,.0f}]",
                     f"{ch:,.0f} [{max(results['channels4'][s]):,.0f}]",
                     f"{ratio:.2f}x", "met" if ratio >= 2 else "MISSED"])
    c.print_table(["scenario", "chanserve", "Channels 4", "ratio", "target >=2x"], rows)
    print(c.fmt_load(loadinfo))
    path = c.save("layer", {"results": summary, "load": loadinfo, "argv": sys.argv})
    print(f"(saved {os.path.relpath(path, c.ROOT)})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", choices=["chanserve"], help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--max-seconds", type=float, default=300.0)
    args = p.parse_args()
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for s in args.scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    if args.side == "chanserve":
        chanserve_side(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
