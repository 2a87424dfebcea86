"""
``manage.py runserver`` and ``manage.py runworker``: option handling in
process, and real runs in subprocesses (serving Django and static files,
the autoreloader, a busy port, a separate worker over Redis).
"""

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import websocket

from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import CommandError
from django.test.utils import override_settings
from twisted.trial import unittest

import chanserve.handler as handler_module
from chanserve.management import _run
from chanserve.management.commands.runserver import Command as RunserverCommand
from chanserve.staticfiles import StaticFilesHandler
from tests.redis_server import shared_server
from tests.twistd_process import free_port, subprocess_environment, wait_for_port

SETTINGS = "tests.project.settings_django"


class RunworkerOptionTests(unittest.SynchronousTestCase):
    """runworker refuses what cannot work, with clear messages."""

    def test_refuses_in_memory_layer(self):
        """The in-memory layer is refused: a worker process could never see its messages."""
        e = self.assertRaises(CommandError, call_command, "runworker")
        self.assertIn("cross-process", str(e))
        self.assertIn("InMemoryChannelLayer", str(e))
        self.assertIn("runserver", str(e))

    def test_seed_alias_refused_too(self):
        """The seed's asgiref.inmemory.ChannelLayer alias is refused the same way."""
        layers = {"default": {"BACKEND": "asgiref.inmemory.ChannelLayer"}}
        with override_settings(CHANNEL_LAYERS=layers):
            e = self.assertRaises(CommandError, call_command, "runworker")
        self.assertIn("cross-process", str(e))

    def test_unknown_layer(self):
        """A --layer alias not in CHANNEL_LAYERS names the setting."""
        e = self.assertRaises(CommandError, call_command, "runworker", layer="nope")
        self.assertIn("CHANNEL_LAYERS has no layer 'nope'", str(e))


class RunserverOptionTests(unittest.SynchronousTestCase):
    """runserver is chanserve's and turns its options into chanserve service options."""

    def test_is_chanserves_command(self):
        """With chanserve in INSTALLED_APPS, 'runserver' is chanserve's command."""
        self.assertEqual(get_commands()["runserver"], "chanserve")
        self.assertIsInstance(load_command_class("chanserve", "runserver"), RunserverCommand)

    def test_takes_over_staticfiles(self):
        """With staticfiles listed before chanserve, runserver is still chanserve's."""
        from django.contrib.staticfiles.management.commands import runserver as static_runserver
        original = static_runserver.Command
        self.addCleanup(setattr, static_runserver, "Command", original)
        apps = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
                "django.contrib.staticfiles", "chanserve"]
        with override_settings(INSTALLED_APPS=apps, STATIC_URL="/static/"):
            self.assertEqual(get_commands()["runserver"], "django.contrib.staticfiles")
            self.assertIsInstance(load_command_class("django.contrib.staticfiles", "runserver"),
                                  RunserverCommand)

    def command(self, addr, port="8000"):
        command = RunserverCommand()
        command.addr, command.port = addr, port
        return command

    def test_endpoints(self):
        """Address and port become a tcp endpoint; '0' means every IPv4 address; IPv6 is escaped."""
        self.assertEqual(self.command("127.0.0.1").endpoint(), "tcp:8000:interface=127.0.0.1")
        self.assertEqual(self.command("0", "9000").endpoint(), "tcp:9000:interface=0.0.0.0")
        self.assertEqual(self.command("::1").endpoint(), "tcp:8000:interface=\\:\\:1")

    def test_service_arguments(self):
        """--noworker and --threads pass through; the access log goes to stdout unless -v 0."""
        command = self.command("127.0.0.1")
        self.assertEqual(command.service_arguments(run_worker=True, verbosity=1),
                         ["--endpoint", "tcp:8000:interface=127.0.0.1", "--access-log", "-"])
        self.assertEqual(command.service_arguments(run_worker=False, threads=3, verbosity=0),
                         ["--endpoint", "tcp:8000:interface=127.0.0.1", "--noworker",
                          "--threads", "3"])


class StaticHandlerTests(unittest.SynchronousTestCase):
    """When runserver/runworker serve static files from the view consumer."""

    APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
            "django.contrib.staticfiles", "chanserve"]

    def setUp(self):
        from django.contrib.staticfiles.management.commands import runserver as static_runserver
        self.addCleanup(setattr, static_runserver, "Command", static_runserver.Command)
        previous = handler_module._handler
        self.addCleanup(setattr, handler_module, "_handler", previous)
        handler_module.set_view_handler(None)

    def install(self, options, **settings):
        with override_settings(**settings):
            installed = _run.install_static_handler(options)
        return installed, isinstance(handler_module.get_view_handler(), StaticFilesHandler)

    def test_debug(self):
        """In DEBUG with staticfiles installed, STATIC_URL is served."""
        self.assertEqual(self.install({}, INSTALLED_APPS=self.APPS, DEBUG=True, STATIC_URL="/s/"),
                         (True, True))

    def test_not_debug(self):
        """Without DEBUG nothing is served, unless --insecure."""
        self.assertEqual(self.install({}, INSTALLED_APPS=self.APPS, DEBUG=False, STATIC_URL="/s/"),
                         (False, False))
        self.assertEqual(self.install({"insecure_serving": True}, INSTALLED_APPS=self.APPS,
                                      DEBUG=False, STATIC_URL="/s/"), (True, True))

    def test_nostatic(self):
        """--nostatic serves nothing."""
        self.assertEqual(self.install({"use_static_handler": False}, INSTALLED_APPS=self.APPS,
                                      DEBUG=True, STATIC_URL="/s/"), (False, False))

    def test_no_staticfiles_app(self):
        """Without django.contrib.staticfiles nothing is served."""
        self.assertEqual(self.install({}, DEBUG=True), (False, False))

    def test_no_static_url(self):
        """staticfiles without STATIC_URL: a note on stderr, and no static serving (no crash)."""
        self.patch(sys, "stderr", io.StringIO())
        self.assertEqual(self.install({}, INSTALLED_APPS=self.APPS, DEBUG=True, STATIC_URL=None),
                         (False, False))
        self.assertIn("STATIC_URL", sys.stderr.getvalue())


# The tests press Ctrl-C (SIGINT). A shell starts background jobs with SIGINT
# ignored and children inherit that, so a suite run as `make test &` would see
# servers that can't be interrupted: exec the command with SIGINT at default.
_SIGINT_AS_AT_A_TERMINAL = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")


class ManageProcess:
    """``python -m django <command> --settings SETTINGS ...`` in a temporary directory."""

    def __init__(self, args, env=None):
        self.directory = tempfile.mkdtemp(prefix="chanserve-manage-")
        self.env = subprocess_environment(self.directory, env)
        self.env["PYTHONPATH"] = os.pathsep.join([self.directory, self.env["PYTHONPATH"]])
        self.args = [sys.executable, "-c", _SIGINT_AS_AT_A_TERMINAL,
                     "-m", "django", *args, "--settings", SETTINGS]
        self.log_path = os.path.join(self.directory, "output.log")
        self.process = None

    def start(self):
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.args, cwd=self.directory, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, text, count=1, timeout=30.0):
        """Block until ``text`` appeared ``count`` times in the output; fail with the log if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not seen (x{count}); output:\n{self.log()}")

    def signal(self, signum, timeout=20.0):
        """Send ``signum`` to the process group; its exit status (SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
            raise AssertionError(f"did not exit on signal {signum}; output:\n{self.log()}")

    def cleanup(self):
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)


def get(url, timeout=10.0):
    """(status, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class RunserverProcessTests(unittest.TestCase):
    """runserver in a real process: Django views, static files, reloading, clean exits."""

    def runserver(self, *args, env=None, port=None):
        self.port = port or free_port()
        proc = ManageProcess(["runserver", *args, f"127.0.0.1:{self.port}"], env=env)
        self.addCleanup(proc.cleanup)
        return proc.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def test_serves_views_and_static_files(self):
        """runserver --noreload serves views and (DEBUG) static files; SIGINT stops it cleanly."""
        proc = self.runserver("--noreload")
        proc.wait_for(f"Starting chanserve development server at http://127.0.0.1:{self.port}/")
        self.assertEqual(get(self.url("/django/hello/")), (200, b"hello from django"))
        self.assertEqual(get(self.url("/static/chanserve/test.css")),
                         (200, b"body { color: #123456; }\n"))
        self.assertEqual(get(self.url("/static/chanserve/missing.css"))[0], 404)
        status, css = get(self.url("/static/admin/css/base.css"))
        self.assertEqual(status, 200)
        self.assertIn(b"{", css)
        self.assertEqual(get(self.url("/django/%C3%BCn%C3%AFcode/w%C3%B6rd/?q=%C3%A7a"))[1].decode(),
                         "word=wörd q=ça path=/django/ünïcode/wörd/")
        # WebSockets on the same port (the default websocket.connect route accepts).
        socket_ = websocket.create_connection(f"ws://127.0.0.1:{self.port}/chat/", timeout=10)
        self.assertTrue(socket_.connected)
        socket_.close()
        self.assertEqual(proc.signal(signal.SIGINT), 0)
        self.assertIn('"GET /django/hello/" 200 17', proc.log())

    def test_nostatic(self):
        """--nostatic leaves STATIC_URL to the URLconf (404 here)."""
        proc = self.runserver("--noreload", "--nostatic")
        proc.wait_for("Starting chanserve development server")
        self.assertEqual(get(self.url("/static/chanserve/test.css"))[0], 404)
        self.assertEqual(get(self.url("/django/hello/"))[0], 200)
        proc.signal(signal.SIGINT)

    def test_autoreload(self):
        """A changed module restarts the server (Django's autoreloader); it serves again after."""
        module = f"chanserve_watch_{uuid.uuid4().hex[:8]}"
        proc = self.runserver(env={"CHANSERVE_DJANGO_WATCH": module})
        path = os.path.join(proc.directory, module + ".py")
        with open(path, "w") as f:
            f.write("VALUE = 1\n")
        proc.wait_for("Starting chanserve development server")
        self.assertEqual(get(self.url("/django/hello/"))[0], 200)
        # The stat reloader compares modification times with the ones it saw
        # first, which it may not have taken yet: move the time forward until
        # it notices (1 s resolution on some filesystems).
        stat = os.stat(path)
        with open(path, "w") as f:
            f.write("VALUE = 2\n")
        for step in range(1, 30):
            os.utime(path, (stat.st_atime + 2 * step, stat.st_mtime + 2 * step))
            try:
                proc.wait_for("changed, reloading", timeout=1.0)
                break
            except AssertionError:
                if proc.process.poll() is not None:
                    raise
        proc.wait_for("changed, reloading")
        proc.wait_for("Starting chanserve development server", count=2)
        self.assertEqual(get(self.url("/django/hello/")), (200, b"hello from django"))
        proc.signal(signal.SIGINT)
        self.assertIsNotNone(proc.process.returncode)

    def test_port_in_use(self):
        """A port already taken ends runserver with status 1 and an error naming it."""
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            proc = self.runserver("--noreload", port=busy.getsockname()[1])
            status = proc.process.wait(30)
        self.assertEqual(status, 1)
        self.assertIn("Error: could not listen on", proc.log())
        self.assertIn("Address already in use", proc.log())

    def test_noworker_with_in_memory_layer(self):
        """--noworker with the in-memory layer is a clear error, not a server that never answers."""
        proc = self.runserver("--noreload", "--noworker")
        status = proc.process.wait(30)
        self.assertNotEqual(status, 0)
        self.assertIn("CommandError", proc.log())
        self.assertIn("cross-process", proc.log())


class RunworkerProcessTests(unittest.TestCase):
    """runserver --noworker and runworker as two processes sharing a Redis layer."""

    def test_separate_worker(self):
        """Requests to runserver --noworker are answered by a separate runworker process."""
        redis = shared_server()
        env = {"CHANSERVE_DJANGO_REDIS": redis.url,
               "CHANSERVE_DJANGO_REDIS_PREFIX": f"mgmt-{uuid.uuid4().hex[:8]}"}
        port = free_port()
        server = ManageProcess(["runserver", "--noreload", "--noworker", f"127.0.0.1:{port}"],
                               env=env)
        self.addCleanup(server.cleanup)
        worker = ManageProcess(["runworker", "--threads", "2", "--only-channels", "http.*"],
                               env=env)
        self.addCleanup(worker.cleanup)
        server.start()
        server.wait_for("Starting chanserve development server")
        self.assertIn("no workers", server.log())
        worker.start()
        worker.wait_for("Running worker against channel layer 'default' for channels: http.request")
        self.assertTrue(wait_for_port(port))
        self.assertEqual(get(f"http://127.0.0.1:{port}/django/hello/"), (200, b"hello from django"))
        self.assertEqual(worker.signal(signal.SIGINT), 0)
        self.assertEqual(server.signal(signal.SIGINT), 0)
