"""
Channels 4 side of bench/layer.py: the same scenarios through
channels.layers.InMemoryChannelLayer on asyncio. Run with the peer venv's
python; prints one JSON object {scenario: messages/s}.
"""

import argparse
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from channels.exceptions import ChannelFull  # noqa: E402
from channels.layers import InMemoryChannelLayer  # noqa: E402

from layer import BATCH, SCENARIOS, counts, http_message, ws_message  # noqa: E402


async def send_yielding(layer, channel, msg, i, batch=BATCH):
    while True:
        try:
            await layer.send(channel, msg)
            break
        except ChannelFull:
            await asyncio.sleep(0)
    if i % batch == batch - 1:
        await asyncio.sleep(0)


async def stream(msg, total, batch=BATCH):
    layer = InMemoryChannelLayer()

    async def sender():
        for i in range(total):
            await send_yielding(layer, "bench.stream", msg, i, batch)

    async def receiver():
        for _ in range(total):
            await layer.receive("bench.stream")

    t0 = time.perf_counter()
    await asyncio.gather(receiver(), sender())
    return total / (time.perf_counter() - t0)


async def direct(msg, total):
    layer = InMemoryChannelLayer()
    t0 = time.perf_counter()
    for _ in range(total):
        await layer.send("bench.direct", msg)
        await layer.receive("bench.direct")
    return total / (time.perf_counter() - t0)


async def pingpong(msg, total):
    layer = InMemoryChannelLayer()

    async def echo():
        for _ in range(total):
            m = await layer.receive("bench.ping")
            await layer.send("bench.pong", m)

    async def client():
        for _ in range(total):
            await layer.send("bench.ping", msg)
            await layer.receive("bench.pong")

    t0 = time.perf_counter()
    await asyncio.gather(echo(), client())
    return 2 * total / (time.perf_counter() - t0)


async def reply(msg, total):
    layer = InMemoryChannelLayer()
    names = [(await layer.new_channel("bench.proc")) for _ in range(1000)]
    per = total // len(names)

    async def sender():
        for i in range(per * len(names)):
            await send_yielding(layer, names[i % len(names)], msg, i)

    async def receiver(name):
        for _ in range(per):
            await layer.receive(name)

    t0 = time.perf_counter()
    await asyncio.gather(*(receiver(n) for n in names), sender())
    return per * len(names) / (time.perf_counter() - t0)


async def group(msg, sends):
    layer = InMemoryChannelLayer()
    members = [(await layer.new_channel("bench.proc")) for _ in range(100)]
    for m in members:
        await layer.group_add("room", m)

    async def sender():
        for _ in range(sends):
            await layer.group_send("room", msg)
            await asyncio.sleep(0)

    async def receiver(name):
        for _ in range(sends):
            await layer.receive(name)

    t0 = time.perf_counter()
    await asyncio.gather(*(receiver(m) for m in members), sender())
    return sends * len(members) / (time.perf_counter() - t0)


async def main(args):
    n = counts(args.scale)
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


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    a = p.parse_args()
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    asyncio.run(main(a))
