"""
``twistd chanserve`` as a command: help, usage errors, start-up failures
(one clear line, non-zero exit, no hung reactor) and graceful SIGTERM.
"""

import http.client
import os
import signal
import socket
import tempfile
import threading

from twisted.trial.unittest import SynchronousTestCase

from .twistd_process import TwistdProcess, free_port, run_twistd

CONTRACT_OPTIONS = [
    "--endpoint", "--port", "--layer", "--threads", "--only-channels", "--exclude-channels",
    "--access-log", "--proxy-headers", "--root-path", "--http-timeout", "--websocket-timeout",
    "--websocket-connect-timeout", "--ping-interval", "--ping-timeout", "--max-request-body",
    "--websocket-max-message", "--noworker", "--worker-only", "--settings",
]


# twistd re-raises the signal that stopped it once it has shut down cleanly.
CLEAN_STOP = (0, -signal.SIGTERM)


def last_line(output):
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class CommandLineTests(SynchronousTestCase):
    """What ``twistd chanserve`` prints and how it exits before serving anything."""

    def test_help_from_other_directory(self):
        """``twistd chanserve --help`` from outside the checkout lists every contract option."""
        with tempfile.TemporaryDirectory() as cwd:
            status, output = run_twistd(["chanserve", "--help"], cwd=cwd)
        self.assertEqual(status, 0, output)
        for option in CONTRACT_OPTIONS:
            self.assertIn(option, output)

    def test_bad_option_value(self):
        """A bad option value is a usage error: non-zero exit, the last line names the option."""
        status, output = run_twistd(["chanserve", "--settings", "tests.project.settings_seed",
                                     "--threads", "lots"])
        self.assertNotEqual(status, 0)
        self.assertIn("threads", last_line(output))
        self.assertNotIn("Traceback", output)

    def test_unknown_option(self):
        """An unknown option is a usage error with a non-zero exit."""
        status, output = run_twistd(["chanserve", "--no-such-option"])
        self.assertNotEqual(status, 0)
        self.assertIn("no-such-option", last_line(output))

    def test_bad_settings_module(self):
        """An unimportable settings module: exit 1 and one line naming it, no traceback."""
        status, output = run_twistd(["-n", "--pidfile=", "chanserve", "--settings",
                                     "tests.project.no_such_settings", "--port", "0"])
        self.assertEqual(status, 1, output)
        self.assertIn("tests.project.no_such_settings", last_line(output))
        self.assertNotIn("Traceback", output)

    def test_broken_routing(self):
        """A ROUTING that can't be imported: exit 1 and one line naming the setting."""
        status, output = run_twistd(["-n", "--pidfile=", "chanserve", "--settings",
                                     "tests.project.settings_worker_broken", "--port", "0"])
        self.assertEqual(status, 1, output)
        self.assertIn("CHANNEL_LAYERS['default']['ROUTING']", last_line(output))
        self.assertNotIn("Traceback", output)

    def test_system_check_error(self):
        """A project failing a system check doesn't start: exit 1, one line naming the check."""
        status, output = run_twistd(["-n", "--pidfile=", "chanserve", "--settings",
                                     "tests.project.settings_check_error", "--port", "0"])
        self.assertEqual(status, 1, output)
        self.assertIn("chanserve.E005", last_line(output))
        self.assertIn("CHANNEL_SESSION_ENGINE", last_line(output))
        self.assertNotIn("Traceback", output)

    def test_cross_process_modes_need_cross_process_layer(self):
        """``--noworker`` and ``--worker-only`` with the in-memory layer are refused clearly."""
        for mode in ("--noworker", "--worker-only"):
            status, output = run_twistd(["-n", "--pidfile=", "chanserve", "--settings",
                                         "tests.project.settings_seed", "--port", "0", mode])
            self.assertEqual(status, 1, output)
            self.assertIn(mode, last_line(output))
            self.assertIn("cross-process", last_line(output))

    def test_port_in_use(self):
        """A port already taken: one 'cannot listen' line in the log, exit status 1, no hang."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            proc = TwistdProcess("tests.project.settings_seed", port=port).spawn()
            try:
                status = proc.wait(30)
            finally:
                proc.stop()
        self.assertEqual(status, 1, proc.log())
        self.assertIn("chanserve could not start: cannot listen", proc.log())
        self.assertIn("Address already in use", proc.log())


    def test_start_failure_after_setup(self):
        """A service failing to start (unwritable access log): one line, exit 1, no traceback."""
        proc = TwistdProcess("tests.project.settings_seed",
                             ["--access-log", "/nonexistent/dir/access.log"]).spawn()
        try:
            status = proc.wait(30)
        finally:
            proc.stop()
        self.assertEqual(status, 1, proc.log())
        self.assertIn("chanserve could not start: interface-server: FileNotFoundError", proc.log())
        self.assertNotIn("Traceback", proc.log())


class GracefulStopTests(SynchronousTestCase):
    """SIGTERM drains: in-flight requests are answered before the process exits 0."""

    def test_sigterm_lets_running_consumer_answer(self):
        """A request whose consumer is running when SIGTERM arrives still gets its response."""
        proc = TwistdProcess("tests.project.settings_seed").start()
        self.addCleanup(proc.stop)
        result = {}

        def request():
            conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=15)
            try:
                conn.request("GET", "/slow/")
                response = conn.getresponse()
                result["response"] = (response.status, response.read())
            except Exception as e:
                result["error"] = e
            finally:
                conn.close()

        client = threading.Thread(target=request)
        client.start()
        # Wait until the slow consumer (it sleeps 1s) is running.
        self.assertTrue(proc.wait_for_log("http_slow: started"), proc.log())
        proc.process.send_signal(signal.SIGTERM)
        client.join(15)
        status = proc.wait(15)
        self.assertEqual(result.get("response"), (200, b"slow but complete"), proc.log())
        self.assertIn(status, CLEAN_STOP, proc.log())
        # New connections are refused once it has stopped.
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", proc.port), timeout=2).close()

    def test_start_and_stop_leave_nothing(self):
        """A server started on a free port stops cleanly on SIGTERM, with no error logged."""
        proc = TwistdProcess("tests.project.settings_seed", port=free_port()).start()
        status = proc.stop()
        self.assertIn(status, CLEAN_STOP, proc.log())
        self.assertNotIn("Traceback", proc.log())
        self.assertIn("Main loop terminated", proc.log())
        self.assertFalse(os.path.exists(proc.directory))
