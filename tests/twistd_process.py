"""
Run ``twistd -n chanserve`` as a subprocess for end-to-end tests.

    proc = TwistdProcess("tests.project.settings_seed")
    proc.start()                # free port, waits until it accepts connections
    self.addCleanup(proc.stop)  # SIGTERM, then SIGKILL after a timeout
    ... talk to 127.0.0.1:proc.port ...

The process runs in its own temporary directory (no pid file, no stray
files in the checkout) with ``PYTHONPATH`` set to the checkout and
``CHANSERVE_TEST_DB`` pointing to a fresh SQLite file there. Its output
goes to a file; ``proc.log()`` reads it, and failures quote it.

These helpers block (with timeouts), for tests that talk to the process
with blocking clients; ``started()`` and ``stopped()`` run them in a thread
and return Deferreds, for trial tests driving Twisted clients.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def twistd_command():
    """The ``twistd`` of the running interpreter (its venv), as an argv prefix."""
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(candidate):
        return [candidate]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port, host="127.0.0.1", timeout=20.0, alive=lambda: True):
    """Block until ``host:port`` accepts a TCP connection; False on timeout or when not ``alive()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def subprocess_environment(directory, extra=None):
    """The environment for a subprocess of the test project."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    paths = [REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["CHANSERVE_TEST_DB"] = os.path.join(directory, "test.sqlite3")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


_shared = {}


def _stop_shared():
    for proc in list(_shared.values()):
        proc.stop()
    _shared.clear()


atexit.register(_stop_shared)


class TwistdProcess:
    """
    One ``twistd -n chanserve --settings SETTINGS`` subprocess.

    ``args`` are extra ``chanserve`` options. With ``port=None`` a free
    port is chosen and ``--port`` added (unless ``listen=False``, for
    ``--worker-only``). ``migrate=True`` runs Django's ``migrate`` for the
    settings first.
    """

    def __init__(self, settings, args=(), port=None, listen=True, env=None, migrate=False,
                 twistd_args=()):
        self.settings = settings
        self.args = list(args)
        self.listen = listen
        self.port = port if port is not None or not listen else free_port()
        self.directory = tempfile.mkdtemp(prefix="chanserve-twistd-")
        self.env = subprocess_environment(self.directory, env)
        self.migrate = migrate
        self.twistd_args = list(twistd_args)
        self.process = None
        self.log_path = os.path.join(self.directory, "twistd.log")
        self._log_file = None
        self._final_log = None

    @classmethod
    def shared(cls, settings, args=(), **kwargs):
        """
        A started process for these settings and args, shared by every test
        of this test run that asks for the same (trial has no
        ``setUpClass``); stopped when the test process exits.
        """
        key = (settings, tuple(args), tuple(sorted(kwargs.items())))
        proc = _shared.get(key)
        if proc is None or not proc.alive():
            if proc is not None:
                proc.stop()
            proc = _shared[key] = cls(settings, args, **kwargs)
            proc.start()
        return proc

    @property
    def command(self):
        argv = twistd_command() + ["-n", "--pidfile=", *self.twistd_args, "chanserve",
                                   "--settings", self.settings]
        if self.listen and self.port is not None:
            argv += ["--port", str(self.port)]
        return argv + self.args

    def url(self, path="/", scheme="http"):
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def log(self):
        """Everything the process wrote so far (kept after ``stop``)."""
        if self._final_log is not None:
            return self._final_log
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def spawn(self):
        """Start the process without waiting for it."""
        if self.migrate:
            subprocess.run(
                [sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v", "0",
                 "--settings", self.settings],
                cwd=self.directory, env=self.env, check=True, timeout=60,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.command, cwd=self.directory, env=self.env, stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def start(self, timeout=20.0):
        """Start and wait until the port accepts connections (or, without a port, for ``ready``)."""
        self.spawn()
        if self.listen:
            ok = wait_for_port(self.port, timeout=timeout, alive=self.alive)
            # Someone else may have taken the "free" port: then this process
            # logs that it could not start and exits.
            ok = ok and self.alive() and "could not start" not in self.log()
        else:
            ok = self.wait_for_log("Worker consuming", timeout=timeout)
        if not ok:
            status = self.process.poll()
            self.stop()
            raise AssertionError(
                f"twistd chanserve did not start (exit status {status}); command "
                f"{' '.join(self.command)}\n--- log ---\n{self.log()}")
        return self

    def started(self, timeout=20.0):
        """``start`` in a thread: a Deferred firing with this process once it listens."""
        from twisted.internet.threads import deferToThread
        return deferToThread(self.start, timeout)

    def stopped(self, timeout=10.0):
        """``stop`` in a thread: a Deferred firing with the exit status."""
        from twisted.internet.threads import deferToThread
        return deferToThread(self.stop, timeout)

    def wait_for_log(self, text, timeout=10.0):
        """Block until ``text`` appears in the log; False on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if not self.alive():
                return text in self.log()
            time.sleep(0.05)
        return False

    def wait(self, timeout=20.0):
        """Wait for the process to exit by itself; its exit status."""
        try:
            return self.process.wait(timeout)
        finally:
            self._close()

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit status. Safe to call twice."""
        if self.process is None:
            self._cleanup_directory()
            return None
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(5)
            return self.process.returncode
        finally:
            self._close()
            self._cleanup_directory()

    def _close(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _cleanup_directory(self):
        if self._final_log is None:
            self._final_log = self.log()
        shutil.rmtree(self.directory, ignore_errors=True)


def run_twistd(args, cwd=None, env=None, timeout=60.0):
    """Run ``twistd`` with ``args`` to completion: ``(exit status, combined output)``."""
    directory = cwd or tempfile.mkdtemp(prefix="chanserve-twistd-")
    try:
        result = subprocess.run(
            twistd_command() + list(args), cwd=directory,
            env=subprocess_environment(directory, env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        return result.returncode, result.stdout.decode("utf-8", "replace")
    finally:
        if cwd is None:
            shutil.rmtree(directory, ignore_errors=True)
