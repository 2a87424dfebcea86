"""The built distribution carries the twistd plugin, and an installed copy is discovered."""

import os
import subprocess
import sys
import sysconfig
import zipfile

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run with -S so no .pth file (our editable install among them) puts the
# checkout on sys.path: only the installed copy and the venv's libraries are seen.
_PROBE = r"""
import io, sys, contextlib
target, site_packages = sys.argv[1], sys.argv[2]
sys.path[:0] = [target, site_packages]
import chanserve
assert chanserve.__file__.startswith(target), chanserve.__file__
from twisted.plugin import IPlugin, getPlugins
from twisted.application.service import IServiceMaker
from twisted import plugins
makers = [p for p in getPlugins(IServiceMaker, plugins) if p.tapname == "chanserve"]
assert len(makers) == 1, makers
print("module", makers[0].module)
from twisted.scripts.twistd import run
sys.argv = ["twistd", "chanserve", "--help"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        run()
    except SystemExit as e:
        assert not e.code, e.code
print(out.getvalue())
"""


class PackagingTests(unittest.TestCase):
    """The wheel holds the plugin; an installed copy, away from the checkout, serves twistd."""

    def setUp(self):
        self.tmp = os.path.abspath(self.mktemp())
        os.makedirs(self.tmp)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
             "-w", os.path.join(self.tmp, "dist"), ROOT],
            check=True, cwd=self.tmp, capture_output=True)
        (self.wheel,) = [os.path.join(self.tmp, "dist", n)
                         for n in os.listdir(os.path.join(self.tmp, "dist"))]

    def test_wheel_contents(self):
        """The wheel has twisted/plugins/chanserve_plugin.py and no twisted/__init__.py."""
        names = set(zipfile.ZipFile(self.wheel).namelist())
        self.assertIn("twisted/plugins/chanserve_plugin.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertNotIn("twisted/plugins/dropin.cache", names)
        self.assertIn("chanserve/tap.py", names)
        self.assertIn("chanserve/layers/_inmemory.py", names)

    def test_installed_plugin_discovered(self):
        """From a directory outside the checkout, the installed plugin runs `twistd chanserve --help`."""
        target = os.path.join(self.tmp, "site")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", target, self.wheel], check=True, capture_output=True)
        site_packages = sysconfig.get_paths()["purelib"]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
        result = subprocess.run(
            [sys.executable, "-S", "-c", _PROBE, target, site_packages],
            cwd=self.tmp, env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("module chanserve.tap", result.stdout)
        for option in ("--endpoint", "--port", "--layer", "--threads", "--only-channels",
                       "--exclude-channels", "--access-log", "--proxy-headers", "--root-path",
                       "--http-timeout", "--websocket-timeout", "--websocket-connect-timeout",
                       "--ping-interval", "--ping-timeout", "--max-request-body",
                       "--websocket-max-message", "--noworker", "--worker-only", "--settings"):
            self.assertIn(option, result.stdout)
