"""
The example chat in a real browser: headless Chromium (Debian's ``chromium``
and ``chromium-driver`` packages) driven by Selenium.

Two pages log in and join a room; a message typed in one shows up in both.
The getting-started guide's JavaScript console snippet (``docs/examples/echo.js``)
runs against the example's echo route. Screenshots are kept in
``build/screenshots/`` for inspection.
"""

import os
import secrets
import shutil
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from twisted.trial import unittest

from tests.test_example import REPO, ExampleServer, manage

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = os.path.join(REPO, "build", "screenshots")
TIMEOUT = 30
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1000,800"]


def start_chromium(testcase):
    """A headless Chromium with a fresh profile, quit when the test ends."""
    profile = tempfile.mkdtemp(prefix="chanserve-chromium-")
    testcase.addCleanup(shutil.rmtree, profile, True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER,
                      log_output=os.path.join(profile, "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    testcase.addCleanup(driver.quit)
    driver.set_page_load_timeout(TIMEOUT)
    return driver


def screenshot(driver, name):
    """Save a screenshot as ``build/screenshots/<name>.png``; its path."""
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, name + ".png")
    driver.save_screenshot(path)
    return path


class BrowserChatTests(unittest.SynchronousTestCase):
    """The example chat as a person uses it, in headless Chromium."""

    def setUp(self):
        self.server = ExampleServer(self)
        self.driver = start_chromium(self)
        self.wait = WebDriverWait(self.driver, TIMEOUT)


    def wait_online(self):
        """Wait until the room page's WebSocket is open."""
        self.wait.until(expected_conditions.text_to_be_present_in_element(
            (By.ID, "status"), "online"))

    def wait_for_message(self, text):
        """Wait until the room page shows a message with ``text``; the shown texts."""
        self.wait.until(lambda d: text in [e.text for e in d.find_elements(By.CSS_SELECTOR, "#log .text")])
        return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, "#log .text")]

    def test_two_pages_chat(self):
        """Log in, open a room in two pages, send in one: the message appears in both, and in the history."""
        room = "browser-" + secrets.token_hex(3)
        driver = self.driver
        driver.get(f"{self.server.url}/chat/{room}/")
        self.assertIn("/accounts/login/", driver.current_url)
        driver.find_element(By.ID, "id_username").send_keys("demo")
        driver.find_element(By.ID, "id_password").send_keys("demo")
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        self.wait.until(expected_conditions.url_to_be(f"{self.server.url}/chat/{room}/"))
        self.wait_online()
        first = driver.current_window_handle

        driver.switch_to.new_window("window")
        second = driver.current_window_handle
        driver.get(f"{self.server.url}/chat/{room}/")
        self.wait_online()
        box = driver.find_element(By.ID, "message")
        box.send_keys("Hello from the second page")
        driver.find_element(By.CSS_SELECTOR, "#say button[type=submit]").click()
        self.assertEqual(self.wait_for_message("Hello from the second page"),
                         ["Hello from the second page"])
        self.assertEqual(box.get_attribute("value"), "")

        driver.switch_to.window(first)
        self.assertEqual(self.wait_for_message("Hello from the second page"),
                         ["Hello from the second page"])
        self.assertEqual(driver.find_element(By.CSS_SELECTOR, "#log .user").text, "demo")
        screenshot(driver, "chat-first-page")
        driver.switch_to.window(second)
        screenshot(driver, "chat-second-page")

        # A page opened later shows the message from the room's history.
        driver.switch_to.new_window("tab")
        driver.get(f"{self.server.url}/chat/{room}/")
        self.assertEqual(self.wait_for_message("Hello from the second page"),
                         ["Hello from the second page"])
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        self.assertEqual(errors, [])

    def test_restart_and_catch_up(self):
        """
        When the server restarts (on the same socket), the page reconnects by
        itself and shows what was said while it was away; live chat resumes.
        """
        room = "restart-" + secrets.token_hex(3)
        driver = self.driver
        driver.get(f"{self.server.url}/accounts/login/?next=/chat/{room}/")
        driver.find_element(By.ID, "id_username").send_keys("demo")
        driver.find_element(By.ID, "id_password").send_keys("demo")
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        self.wait_online()
        self.assertIn(self.server.stop(), (0, -15))
        self.wait.until(expected_conditions.text_to_be_present_in_element(
            (By.ID, "status"), "reconnecting"))
        said = manage(self.server.database, "shell", "-c",
                      "from chat.models import ChatMessage; "
                      f"ChatMessage.objects.create(room='{room}', username='bot', "
                      "message='said while you were away')")
        self.assertEqual(said.returncode, 0, said.stderr)
        self.server.start()
        self.wait_online()
        self.assertEqual(self.wait_for_message("said while you were away"),
                         ["said while you were away"])
        driver.find_element(By.ID, "message").send_keys("back again")
        driver.find_element(By.CSS_SELECTOR, "#say button[type=submit]").click()
        self.assertEqual(self.wait_for_message("back again"),
                         ["said while you were away", "back again"])
        screenshot(driver, "chat-after-restart")

    def test_seed_console_snippet(self):
        """The guide's JavaScript console snippet gets "hello world" back from the echo route."""
        with open(os.path.join(REPO, "docs", "examples", "echo.js")) as f:
            snippet = f.read()
        self.assertIn('"ws://127.0.0.1:8000/chat/"', snippet)
        # "you might need to change the socket address": the test server's port.
        snippet = snippet.replace("127.0.0.1:8000", f"127.0.0.1:{self.server.port}")
        self.driver.get(f"{self.server.url}/accounts/login/")
        self.driver.execute_script("window.alerts = []; window.alert = function (m) { window.alerts.push(m); };")
        self.driver.execute_script(snippet)
        self.wait.until(lambda d: d.execute_script("return window.alerts.length") > 0)
        self.assertEqual(self.driver.execute_script("return window.alerts"), ["hello world"])
        screenshot(self.driver, "echo-snippet")
