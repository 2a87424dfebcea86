"""
HTTP workloads through Django (the same view, URL routing and default
middleware everywhere), chanserve side by side with Daphne 4 + Channels 4,
uvicorn + Channels 4 and gunicorn (one sync worker, WSGI):

hello   GET /hello/ (a short text): req/s, p50/p99 latency (wrk, 32 connections)
upload  POST /upload/ with a 1 MiB body, read by the view in 64 KiB pieces:
        req/s, p99, server RSS before / peak / after (wrk, 8 connections)

The load generator is wrk (Debian package) on 127.0.0.1, one thread.
Usage: python bench/http_bench.py [--only hello,upload] [--sides a,b] [--rounds N]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402
import servers  # noqa: E402

DEFAULT_SIDES = ("chanserve", "daphne", "uvicorn", "uvicorn-fast", "gunicorn")
UPLOAD_LUA = """
wrk.method = "POST"
wrk.body = string.rep("a", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def parse_wrk(out):
    res = {"rps": float("nan"), "p50_ms": float("nan"), "p99_ms": float("nan"),
           "errors": 0, "non2xx": 0, "requests": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        if m:
            res[key] = _ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    return res


def wrk(url, conns, seconds, script=None):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "--latency"]
    if script:
        argv += ["-s", script]
    proc = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr}")
    return parse_wrk(proc.stdout)


class RssSampler(threading.Thread):
    def __init__(self, server, interval=0.1):
        super().__init__(daemon=True)
        self.server, self.interval = server, interval
        self.peak = 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.peak = max(self.peak, self.server.rss())
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join()
        return self.peak


def check(url, data=None, expect=b""):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    if expect not in body:
        raise RuntimeError(f"unexpected answer from {url}: {body[:200]!r}")


def run_side(side, only, args, log_dir, lua):
    out = {}
    with servers.Server(side, log_dir=log_dir) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        if "hello" in only:
            check(base + "/hello/", expect=b"Hello, world!")
            wrk(base + "/hello/", args.conns, 2)  # warm-up
            cpu0, cs0 = srv.cpu_seconds(), srv.ctx_switches()
            r = wrk(base + "/hello/", args.conns, args.seconds)
            cpu, cs = srv.cpu_seconds() - cpu0, srv.ctx_switches() - cs0
            r["server_cpu_ms_per_req"] = 1000 * cpu / r["requests"] if r["requests"] else float("nan")
            r["server_ctx_switches_per_req"] = cs / r["requests"] if r["requests"] else float("nan")
            out["hello"] = r
        if "upload" in only:
            check(base + "/upload/", data=b"a" * 1048576, expect=b"1048576")
            wrk(base + "/upload/", args.upload_conns, 2, lua)  # warm-up
            time.sleep(0.5)
            before = srv.rss()
            sampler = RssSampler(srv)
            sampler.start()
            r = wrk(base + "/upload/", args.upload_conns, args.seconds, lua)
            peak = sampler.stop()
            time.sleep(1.0)
            r.update(rss_before_mib=before / 2**20, rss_peak_mib=peak / 2**20,
                     rss_after_mib=srv.rss() / 2**20)
            out["upload"] = r
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="hello,upload")
    p.add_argument("--sides", default=",".join(DEFAULT_SIDES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--upload-conns", type=int, default=8)
    p.add_argument("--max-seconds", type=float, default=900.0)
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk; bench/run.sh does it)")
    only = set(args.only.split(","))
    sides = [s for s in args.sides.split(",") if s]
    c.require_peers()
    servers.raise_nofile()
    log_dir = os.path.join(c.RESULTS, "logs")
    os.makedirs(log_dir, exist_ok=True)
    lua = os.path.join(tempfile.mkdtemp(prefix="chanserve-bench-"), "upload.lua")
    with open(lua, "w") as f:
        f.write(UPLOAD_LUA)
    load = c.MachineLoad()
    deadline = time.monotonic() + args.max_seconds
    results = {s: {"hello": [], "upload": []} for s in sides}
    for rnd in range(args.rounds):
        order = sides if rnd % 2 == 0 else sides[::-1]
        for side in order:
            try:
                out = run_side(side, only, args, log_dir, lua)
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
    report(results, sides, only, load.report(), args)


def _med(runs, key):
    vals = [r[key] for r in runs]
    return c.median(vals) if vals else float("nan")


def _r(results, a, b, what, key="rps"):
    ra, rb = results.get(a, {}).get(what), results.get(b, {}).get(what)
    if not ra or not rb:
        return float("nan")
    return _med(ra, key) / _med(rb, key)


def http_targets(results, only):
    t = []
    if "hello" in only:
        best = max((s for s in ("daphne", "uvicorn") if results.get(s, {}).get("hello")),
                   key=lambda s: _med(results[s]["hello"], "rps"), default=None)
        if best:
            t.append((f"hello req/s, chanserve / the better of Daphne and uvicorn ({best})",
                      _r(results, "chanserve", best, "hello"), "ge", 1.5, "x"))
        t.append(("hello req/s, chanserve / gunicorn", _r(results, "chanserve", "gunicorn", "hello"),
                  "ge", 0.8, "x"))
    if "upload" in only:
        for s in ("daphne", "uvicorn"):
            t.append((f"upload req/s, chanserve / {s}", _r(results, "chanserve", s, "upload"), "ge", 1.0, "x"))
        cs = results.get("chanserve", {}).get("upload")
        if cs:
            t.append(("upload: chanserve RSS peak - before (flat memory)",
                      _med(cs, "rss_peak_mib") - _med(cs, "rss_before_mib"), "le", 32.0, " MiB"))
    return t


def report(results, sides, only, loadinfo, args):
    print(f"\n== http: Django through each server (median of rounds)\n   command: {' '.join(sys.argv)}")
    cs = results.get("chanserve", {})
    if "hello" in only:
        print(f"\n-- hello: GET /hello/, {args.conns} connections, {args.seconds}s")
        rows = []
        for s in sides:
            r = results[s]["hello"]
            if not r:
                rows.append([s, "failed"] + [""] * 6)
                continue
            ratio = (f"{_med(cs['hello'], 'rps') / _med(r, 'rps'):.2f}x"
                     if cs and cs["hello"] and s != "chanserve" else "")
            rows.append([s, f"{_med(r, 'rps'):,.0f}", f"{_med(r, 'p50_ms'):.1f}", f"{_med(r, 'p99_ms'):.1f}",
                         f"{_med(r, 'server_cpu_ms_per_req'):.2f}", f"{_med(r, 'server_ctx_switches_per_req'):.1f}",
                         sum(x["errors"] + x["non2xx"] for x in r), ratio])
        c.print_table(["server", "req/s", "p50 ms", "p99 ms", "server CPU ms/req", "ctx switches/req", "errors",
                       "chanserve / this"], rows)
    if "upload" in only:
        print(f"\n-- upload: POST 1 MiB bodies, {args.upload_conns} connections, {args.seconds}s")
        rows = []
        for s in sides:
            r = results[s]["upload"]
            if not r:
                rows.append([s, "failed"] + [""] * 6)
                continue
            ratio = (f"{_med(cs['upload'], 'rps') / _med(r, 'rps'):.2f}x"
                     if cs and cs["upload"] and s != "chanserve" else "")
            rows.append([s, f"{_med(r, 'rps'):,.0f}", f"{_med(r, 'p99_ms'):.1f}",
                         f"{_med(r, 'rss_before_mib'):.0f}", f"{_med(r, 'rss_peak_mib'):.0f}",
                         f"{_med(r, 'rss_after_mib'):.0f}", sum(x["errors"] + x["non2xx"] for x in r), ratio])
        c.print_table(["server", "req/s", "p99 ms", "RSS before MiB", "RSS peak MiB", "RSS after MiB",
                       "errors", "chanserve / this"], rows)
    c.print_targets(http_targets(results, only))
    print(c.fmt_load(loadinfo))
    path = c.save("http", {"results": results, "load": loadinfo, "argv": sys.argv})
    print(f"(saved {os.path.relpath(path, c.ROOT)})")


if __name__ == "__main__":
    main()
