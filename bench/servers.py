"""Start and stop the servers under test (all on 127.0.0.1, a free port)."""

import os
import resource
import signal
import socket
import subprocess
import tempfile
import time

import _common as c

SITE = os.path.join(c.BENCH, "djsite")
PEERS_DIR = os.path.join(c.BENCH, "peers")
NOFILE = 20000

# name -> (description, kind)
SERVERS = {
    "chanserve": "chanserve (twistd -n chanserve, in-memory layer, async consumers)",
    "chanserve-sync": "chanserve (seed-style plain-function consumers in the thread pool)",
    "chanserve-redis": "chanserve --noworker + --worker-only over Redis",
    "daphne": "Daphne 4 + Channels 4 (async consumers)",
    "daphne-redis": "Daphne 4 + Channels 4 + channels_redis 4",
    "uvicorn": "uvicorn (asyncio loop, h11, websockets) + Channels 4",
    "uvicorn-fast": "uvicorn (uvloop, httptools, websockets) + Channels 4",
    "gunicorn": "gunicorn, 1 sync worker, WSGI",
}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _child_setup():
    _raise_nofile()
    os.setsid()


def raise_nofile():
    _raise_nofile()


def _twistd():
    py = c.chanserve_python()
    twistd = os.path.join(os.path.dirname(py), "twistd")
    if os.path.exists(twistd):
        return [twistd]
    return [py, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]


class Server:
    """One server process (group) on a free port; a context manager."""

    def __init__(self, name, port=None, settings=None, extra_env=None, log_dir=None, extra_args=()):
        if name not in SERVERS:
            raise ValueError(f"unknown server {name!r}")
        self.name = name
        self.port = port or free_port()
        self.procs = []
        self.extra_env = extra_env or {}
        self.settings = settings
        self.extra_args = list(extra_args)
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="chanserve-bench-")
        self.logs = []

    # -- commands ------------------------------------------------------------

    def _chanserve_cmd(self, settings, *extra):
        return (_twistd() + ["--pidfile=", "-n", "chanserve", "--settings", settings] + list(extra)
                + self.extra_args)

    def commands(self):
        """[(argv, env)] for every process of this server."""
        port = str(self.port)
        endpoint = f"tcp:{port}:interface=127.0.0.1"
        if self.name.startswith("chanserve"):
            env = c.chanserve_env({"PYTHONPATH": os.pathsep.join([c.ROOT, c.BENCH, SITE])})
            env.update(self.extra_env)
            if self.name == "chanserve":
                return [(self._chanserve_cmd(self.settings or "chanserve_project.settings",
                                             "--endpoint", endpoint), env)]
            if self.name == "chanserve-sync":
                return [(self._chanserve_cmd(self.settings or "chanserve_project.settings_sync",
                                             "--endpoint", endpoint), env)]
            settings = self.settings or "chanserve_project.settings_redis"
            return [
                (self._chanserve_cmd(settings, "--noworker", "--endpoint", endpoint), env),
                (self._chanserve_cmd(settings, "--worker-only"), env),
            ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([PEERS_DIR, SITE])
        env["DJANGO_SETTINGS_MODULE"] = ("peerproject.settings_redis" if self.name.endswith("-redis")
                                         else "peerproject.settings")
        env.update(self.extra_env)
        py = c.PEER_PYTHON
        app = "peerproject.asgi:application"
        if self.name == "daphne":
            return [([py, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", port, app], env)]
        if self.name == "daphne-redis":
            app = "peerproject.asgi_redis:application"
            return [([py, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", port, app], env),
                    ([py, "-m", "django", "runworker", "bench-echo", "-v", "0"], env)]
        if self.name == "uvicorn":
            return [([py, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", port,
                      "--loop", "asyncio", "--http", "h11", "--ws", "websockets",
                      "--no-access-log", "--log-level", "warning", "--backlog", "4096"], env)]
        if self.name == "uvicorn-fast":
            return [([py, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", port,
                      "--loop", "uvloop", "--http", "httptools", "--ws", "websockets",
                      "--no-access-log", "--log-level", "warning", "--backlog", "4096"], env)]
        if self.name == "gunicorn":
            return [([py, "-m", "gunicorn", "peerproject.wsgi:application", "-b", f"127.0.0.1:{port}",
                      "-w", "1", "-k", "sync", "--log-level", "warning", "--backlog", "4096"], env)]
        raise AssertionError(self.name)

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout=30.0):
        for i, (argv, env) in enumerate(self.commands()):
            log = open(os.path.join(self.log_dir, f"{self.name}-{self.port}-{i}.log"), "wb")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.log_dir, preexec_fn=_child_setup))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{self.name} exited with {p.returncode}:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on {self.port} within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n=3000):
        out = []
        for log in self.logs:
            log.flush()
            try:
                with open(log.name, "rb") as f:
                    out.append(f.read()[-n:].decode("utf-8", "replace"))
            except OSError:
                pass
        return "\n".join(out)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        for log in self.logs:
            log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- measurements --------------------------------------------------------

    def pids(self):
        """Every live process of this server (its children too: gunicorn's worker)."""
        pids = []
        for p in self.procs:
            if p.poll() is None:
                pids.append(p.pid)
                pids.extend(_children(p.pid))
        return pids

    def rss(self):
        """Resident memory of the server's processes, in bytes."""
        return sum(rss_of(pid) for pid in self.pids())

    def ctx_switches(self):
        return ctx_switches(self.pids())

    def cpu_seconds(self):
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError):
                pass
        return total


def ctx_switches(pids):
    """Context switches (voluntary + involuntary) of every thread of ``pids``."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


def _children(pid):
    out = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return out
    for k in kids:
        out.append(k)
        out.extend(_children(k))
    return out


def rss_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
