"""The console's notifications page in a real browser, against the whole stack with
notifier_service: a webhook pointed at a receiver on loopback (the local profile allows
it), its secret shown once, a test event whose signature verifies with `standardwebhooks`
and whose delivery the page shows; a device listed and removed; a preference that stays
after a reload; Web Push's opt-in (headless Chromium has a service worker but no push
service offline: the worker registers, and the refusal is said in words); French."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.browser.test_console import PASSWORD, register, unique_email

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]


class Receiver:
    """A webhook receiver on 127.0.0.1: keeps each request's headers and body, answers 204."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/terra/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


def open_notifications(page) -> None:
    page.click("nav a[href='#notifications']")
    page.one("#notify-heading")
    page.one("form.preferences table")  # the targets and preferences have loaded
    page.one("ul.webhooks li")  # and the webhooks ("No webhooks yet." at first)


def expected_failure(page, status: int) -> None:
    """Chromium logs a refused request (a 422 the page shows) as a failed resource."""
    page.collect_logs()
    page.console = [e for e in page.console if f"status of {status}" not in e["message"]]


def web_push_opt_in(page) -> None:
    """Allowed, as if the person said yes: what fails then is the push service itself,
    which headless Chromium offline never answers (the page gives up after 10 s, so the
    webhook steps run meanwhile, and `web_push_refused` reads the verdict)."""
    page.driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": page.base_url, "permissions": ["notifications"]})
    page.button("Turn on notifications in this browser")
    page.text(".push-status", "Asking the browser")
    worker = page.wait(lambda: page.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        navigator.serviceWorker.getRegistration('/').then((r) => done(r && r.active && {
          scope: r.scope, script: r.active.scriptURL}));
    """), 10, "the service worker to be active")
    assert worker == {"scope": page.base_url + "/", "script": page.base_url + "/sw.js"}


def web_push_refused(page) -> None:
    status = page.wait(lambda: next(iter(e for e in page.css(".push-status")
                                         if e.text and "Asking" not in e.text), None), 20,
                       "the opt-in's verdict")
    if "Done" in status.text:  # a machine that reaches a real push service: subscribed
        page.text("ul.targets li", "(this browser)")
        page.button("Turn off notifications in this browser")
        page.text(".push-status", "no longer be notified")
        return
    assert "could not subscribe to push notifications" in status.text, status.text
    assert "warning" in status.get_attribute("class")
    assert page.one("#push-heading ~ .push button").text == "Turn on notifications in this browser"
    page.shot("web-push-refused")


def create_webhook(page, receiver: Receiver) -> str:
    page.fill("input[name=url]", "ftp://example.com/hook")  # refused, next to its field
    page.button("Add webhook")
    error = page.one(".webhook-form .field-error")
    assert error.find_element("xpath", "..").find_element(
        "css selector", "input").get_attribute("name") == "url"
    assert page.one("input[name=url]").get_attribute("aria-invalid") == "true"
    expected_failure(page, 422)
    page.fill("input[name=url]", receiver.url)
    page.fill("input[name=description]", "my server")
    page.click("input[name=events][value='generation.completed']")
    page.button("Add webhook")
    page.text(".secret-shown .warning", "Shown once")
    secret = page.one(".secret-shown input[name=secret]").get_attribute("value")
    assert secret.startswith("whsec_")
    assert not page.css(".webhook-form .field-error")
    hook = page.text("ul.webhooks li[data-webhook]", receiver.url)
    assert "Enabled" in hook.text and "Images ready" in hook.text and "my server" in hook.text
    page.shot("webhook-created")
    return secret


def send_a_test_event(page, receiver: Receiver, secret: str) -> None:
    page.button("Send test event", within="ul.webhooks li[data-webhook]")
    page.text(".hook-actions [role=status]", "Test event queued.")
    page.wait(lambda: receiver.requests, 20, "the receiver to be called")
    headers, body = receiver.requests[0]
    payload = Webhook(secret).verify(body, headers)  # raises unless signed with the secret
    assert payload["type"] == "webhook.test"
    row = page.one("table.deliveries tr[data-state=delivered]", 20)
    assert headers["webhook-id"] == row.get_attribute("data-delivery")
    assert "Test event" in row.text and "delivered" in row.text and "204" in row.text
    assert len(receiver.requests) == 1
    page.shot("test-delivered")


def device_listed_and_removed(page, email: str) -> None:
    """A phone registered through the API (as an app would) shows here and goes with its
    Remove button."""
    with httpx.Client(base_url=page.base_url) as http:
        token = http.post("/api/auth/login", json={"email": email, "password": PASSWORD}
                          ).json()["access_token"]
        http.post("/api/notifications/devices", headers={"Authorization": f"Bearer {token}"},
                  json={"token": "ExponentPushToken[browser-test-0042]", "platform": "ios",
                        "provider": "expo"}).raise_for_status()
    page.click("nav a[href='#prompt']")
    open_notifications(page)
    device = page.text("ul.targets li", "ios device via expo")
    page.shot("device-listed")
    device.find_element("css selector", "button").click()
    page.accept_dialog()
    page.text("#targets-heading ~ p.empty", "No browser or device")


def preference_kept_after_reload(page, receiver: Receiver) -> None:
    box = "input[name='prompt.optimized:webhook']"  # off by default
    assert not page.one(box).is_selected()
    page.click(box)
    page.button("Save preferences")
    page.text("form.preferences [role=status]", "Preferences saved.")
    page.driver.refresh()
    page.one("#notify-heading")
    page.wait(lambda: page.one(box).is_selected(), 10, "the saved preference")
    assert page.one("input[name='prompt.optimized:web_push']").is_selected() is False
    # the secret was shown once: after a reload it is nowhere on the page
    page.text("ul.webhooks li[data-webhook]", receiver.url)
    page.one("table.deliveries tr[data-state=delivered]")
    assert not page.css(".secret-shown")
    assert "whsec_" not in page.driver.page_source
    page.shot("reloaded")


def test_notifications_webhook_preferences_and_web_push(open_console, receiver):
    page = open_console()
    email = register(page, "notify")
    open_notifications(page)
    page.text("ul.webhooks li", "No webhooks yet.")
    page.text("#targets-heading ~ p.empty", "No browser or device")
    page.shot("notifications")
    web_push_opt_in(page)
    secret = create_webhook(page, receiver)
    send_a_test_event(page, receiver, secret)
    web_push_refused(page)
    preference_kept_after_reload(page, receiver)
    device_listed_and_removed(page, email)


def test_the_notifications_page_in_french_on_a_phone(open_console):
    page = open_console(language="fr-FR", width=390, height=844)
    page.button("Créer un compte")
    page.fill("input[name=email]", unique_email("notify-fr"))
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.text("#prompt-heading", "Améliorer un prompt")
    page.click("nav a[href='#notifications']")
    page.text("main h1", "Notifications")
    page.text("#push-heading", "Ce navigateur")
    page.text("#prefs-heading", "Ce qui vous prévient")
    page.text("form.preferences caption", "Chaque événement")
    page.text("form.preferences th", "Entraînement terminé")
    page.text("ul.webhooks li", "Pas encore de webhook.")
    assert page.one("input[name='generation.completed:web_push']").get_attribute(
        "aria-label") == "Images prêtes par Navigateurs"
    page.text(".webhook-form button[type=submit]", "Ajouter le webhook")
    # nothing wider than the screen: the preferences grid fits without scrolling
    assert page.driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
    assert page.driver.execute_script(
        "const box = document.querySelector('form.preferences .scroll');"
        "return box.scrollWidth <= box.clientWidth")
    page.shot("phone-fr-notifications")
    assert json.loads(page.driver.execute_script(
        "return JSON.stringify(document.documentElement.lang)")) == "fr"
