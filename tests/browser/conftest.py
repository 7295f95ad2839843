"""The web console in Debian's Chromium (driven by Selenium through chromedriver) against
the whole stack as processes: auth, prompt, trainer, generator and notifier services and a
gateway, over the session's nats-server and S3. The browser reaches the gateway through a
relay the tests can cut (tests/browser/proxy.py).

Every step writes a screenshot to `.terra-test-logs/browser/<test>/` (gitignored) and is
checked as it is shown: no console error, no serious or critical axe-core violation.
Every request the page makes is recorded (Chromium's performance log) and must go to the
gateway, or to S3 for presigned images."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from testing.stack import ServiceStack, service_env
from tests.browser.proxy import CuttableRelay

# A failed test's report names the services' logs, as in tests/e2e.
from tests.e2e.conftest import pytest_runtest_makereport, pytest_runtest_setup  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".terra-test-logs" / "browser"
DIST = ROOT / "web" / "dist" / "index.html"
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def pytest_collection_modifyitems(config, items):
    browser_items = [item for item in items if item.get_closest_marker("browser")]
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER, DIST, AXE) if not p.exists()]
    if not missing or not browser_items:
        return
    # `make test` and `make e2e-browser` install and build these first; in CI a missing
    # one is a failure, not a skip.
    if os.environ.get("CI"):
        raise pytest.UsageError(f"browser tests need {missing}: run `make install`")
    skip = pytest.mark.skip(reason=f"missing {', '.join(missing)}: run `make install`")
    for item in browser_items:
        item.add_marker(skip)


# Package-scoped: its services share the session's NATS with tests/e2e's stack, and two
# auth_services (or generators) answering the same subjects would split that stack's work
# between different settings. It stops when the browser tests are done.
@pytest.fixture(scope="package")
def browser_stack(nats_endpoint, s3, google_keys, tmp_path_factory):
    env = service_env(
        nats_endpoint.url, s3.endpoint, s3.service_keys,
        TERRA_NATS_CREDENTIALS_DIR=str(nats_endpoint.credentials.directory),
        TERRA_LOG_FORMAT="text",
        TERRA_LOGIN_MAX_FAILURES_PER_ADDRESS="10000",
        TERRA_REGISTRATION_MAX_PER_ADDRESS="10000",
        TERRA_ERASURE_SECOND_PASS_S="3",
        # auth_service accepts the test's Google tokens; which gateway shows the button is
        # each gateway's own setting (the same variable).
        TERRA_GOOGLE_CLIENT_IDS='["terra-web.apps.example"]',
        TERRA_GOOGLE_CERTS_URL=google_keys.certs_url,
    )
    stack = ServiceStack(env, tmp_path_factory.mktemp("browser-stack-logs"), cwd=ROOT)
    stack.start_auth()
    stack.start_service("prompt", "prompt_service")
    stack.start_service("trainer", "trainer_service", TERRA_CHECKPOINT_EVERY="2",
                        TERRA_PROGRESS_INTERVAL_S="0.2", TERRA_SAMPLES="1")
    stack.start_service("generator", "generator_service", TERRA_PROGRESS_INTERVAL_S="0.05")
    # Retries a fraction of a second apart; its VAPID key is made under its own data dir.
    stack.start_service("notifier", "notifier_service", TERRA_NOTIFY_RETRY_SCHEDULE_S="0.3,0.3",
                        TERRA_DATA_DIR=str(tmp_path_factory.mktemp("notifier-data")))
    yield stack
    stack.stop()


@pytest.fixture(scope="package")
def gateway_port(browser_stack) -> int:
    url = browser_stack.start_gateway(TERRA_GOOGLE_CLIENT_IDS="[]")  # no Google button
    return urlsplit(url).port


@pytest.fixture
def relay(gateway_port):
    relay = CuttableRelay(gateway_port)
    yield relay
    relay.close()


class Page:
    """One browser tab on the console, with the checks every step runs."""

    def __init__(self, driver, base_url: str, shots: Path, s3_origin: str) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots
        self.s3_origin = s3_origin
        self.requests: list[str] = []
        self.console: list[dict] = []
        self.step = 0

    # -- finding things
    def wait(self, condition: Callable[[], object], timeout_s: float = 30.0, what: str = ""):
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if found := condition():
                    return found
            except Exception:  # noqa: BLE001, S110  (stale or missing elements: try again)
                pass
            if time.monotonic() > deadline:
                self.shot(f"timeout-{re.sub(r'[^a-z0-9]+', '-', what.lower())[:40]}",
                          check=False)
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            time.sleep(0.1)

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector: str, timeout_s: float = 30.0):
        return self.wait(lambda: next(iter(e for e in self.css(selector) if e.is_displayed()),
                                      None), timeout_s, selector)

    def text(self, selector: str, needle: str, timeout_s: float = 30.0):
        return self.wait(lambda: next(iter(e for e in self.css(selector)
                                           if needle in e.text), None),
                         timeout_s, f"{selector} showing {needle!r}")

    def fill(self, selector: str, value: str) -> None:
        element = self.one(selector)
        element.clear()
        element.send_keys(value)

    def select(self, selector: str, value: str) -> None:
        from selenium.webdriver.support.select import Select

        element = self.one(selector)
        self.wait(lambda: element.find_elements("css selector", f"option[value='{value}']"),
                  10, f"option {value} in {selector}")
        Select(element).select_by_value(value)

    def click(self, selector: str) -> None:
        self.one(selector).click()

    def button(self, label: str, within: str = "") -> None:
        self.text(f"{within} button".strip(), label).click()

    def accept_dialog(self) -> None:
        alert = self.wait(lambda: self.driver.switch_to.alert, 10, "a confirm dialog")
        alert.accept()

    # -- checks
    def collect_logs(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif message["method"] == "Network.webSocketCreated":
                self.requests.append(params["url"])
        self.console += self.driver.get_log("browser")

    def console_errors(self) -> list[dict]:
        return [entry for entry in self.console if entry["level"] == "SEVERE"]

    def foreign_requests(self) -> list[str]:
        gateway = urlsplit(self.base_url).netloc
        allowed = {gateway, urlsplit(self.s3_origin).netloc}
        return [url for url in self.requests
                if not url.startswith(("data:", "blob:")) and urlsplit(url).netloc not in allowed]

    def axe(self) -> list[dict]:
        self.driver.execute_script(AXE.read_text())
        return self.driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            axe.run(document, {resultTypes: ['violations']}).then((result) => done(
              result.violations.filter((v) => ['serious', 'critical'].includes(v.impact))
                .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                              nodes: v.nodes.map((n) => n.target.join(' '))}))));
        """)

    def shot(self, name: str, *, check: bool = True) -> Path:
        """A screenshot of this step; then what the page logged and axe-core's verdict."""
        self.step += 1
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{self.step:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        if check:
            self.collect_logs()
            assert not self.console_errors(), (name, self.console_errors())
            assert not (violations := self.axe()), (name, violations)
        return path


def shots_dir(request) -> Path:
    shots = SHOTS / re.sub(r"[^\w.\[\]-]", "_", request.node.name)
    shutil.rmtree(shots, ignore_errors=True)
    return shots


def chrome(language: str = "en-US", width: int = 1280, height: int = 1000,
           extra_arguments: tuple[str, ...] = ()):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--metrics-recording-only", "--no-default-browser-check",
                     f"--window-size={width},{height}", f"--lang={language}",
                     *extra_arguments):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    options.set_capability("unhandledPromptBehavior", "ignore")
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


@pytest.fixture
def open_console(request, relay, s3):
    """Opens the console in a fresh browser; at the end, every request the page made went
    to the gateway or S3, and nothing was logged as an error."""
    drivers: list[Page] = []
    shots = shots_dir(request)
    s3_origin = f"http://{s3.endpoint}"

    def start(language: str = "en-US", width: int = 1280, height: int = 1000,
              base_url: str | None = None) -> Page:
        base_url = base_url or relay.url
        driver = chrome(language, max(width, 800), height)
        if width < 800:  # a phone: its viewport, its pixel ratio, touch
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
        page = Page(driver, base_url, shots, s3_origin)
        drivers.append(page)
        driver.get(base_url + "/")
        return page

    yield start
    for page in drivers:
        try:
            page.collect_logs()
            assert not page.foreign_requests(), page.foreign_requests()
            # no credential in any URL: no token, no JWT (tickets are single-use)
            assert not [url for url in page.requests if re.search(
                r"[?&](token|access_token|refresh_token)=|eyJ[\w-]+\.eyJ", url)], page.requests
            assert not page.console_errors(), page.console_errors()
        finally:
            page.driver.quit()
