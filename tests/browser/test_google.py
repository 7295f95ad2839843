"""Google sign-in in the console: the button only where a Google client id is configured,
and a sign-in through it. Chromium resolves accounts.google.com to a loopback HTTPS
server that serves a stand-in for Google's script (its `google.accounts.id` calls back
with an ID token signed by the test's Google keys, which auth_service checks as it
would Google's): no request leaves the machine."""

from __future__ import annotations

import datetime
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from terra.ops.servers import LOOPBACK
from tests.browser.conftest import Page, chrome, shots_dir
from tests.browser.proxy import CuttableRelay

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]
WEB_CLIENT = "terra-web.apps.example"

FAKE_GSI = """
window.google = { accounts: { id: {
  initialize(options) { window.__gsi = options; },
  renderButton(node) {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = 'Sign in with Google';
    button.addEventListener('click', () => window.__gsi.callback({ credential: %s }));
    node.append(button);
  },
} } };
"""


def self_signed(directory) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.google.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("accounts.google.com")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture
def fake_google(tmp_path, google_keys):
    """A loopback HTTPS server standing in for accounts.google.com's script."""
    token = google_keys.mint(sub=f"g-{time.time_ns()}", email=f"g{time.time_ns()}@example.com",
                             aud=WEB_CLIENT)
    script = (FAKE_GSI % repr(token)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/gsi/client":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(script)))
            self.end_headers()
            self.wfile.write(script)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed(tmp_path))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def google_gateway(browser_stack, google_keys):
    """A second gateway, this one with a Google client id (auth_service checks the tokens
    against the test's keys)."""
    url = browser_stack.start_gateway(TERRA_GOOGLE_CLIENT_IDS=f'["{WEB_CLIENT}"]')
    relay = CuttableRelay(urlsplit(url).port)
    yield relay
    relay.close()


def test_no_google_button_without_a_client_id(open_console):
    page = open_console()
    page.one("#auth-heading")
    assert not page.css("#google-button")
    page.collect_logs()
    assert not any("google" in url for url in page.requests)


def test_google_sign_in_through_the_button(request, google_gateway, fake_google, s3):
    driver = chrome(extra_arguments=(
        f"--host-resolver-rules=MAP accounts.google.com:443 {LOOPBACK}:{fake_google}",
        "--ignore-certificate-errors"))
    page = Page(driver, google_gateway.url, shots_dir(request), f"http://{s3.endpoint}")
    try:
        driver.get(google_gateway.url + "/")
        page.text("#google-button button", "Sign in with Google")
        page.shot("google-button")
        page.click("#google-button button")
        page.text("#prompt-heading", "Improve a prompt")
        page.text(".socket", "Live")
        page.collect_logs()
        foreign = page.foreign_requests()
        assert foreign == ["https://accounts.google.com/gsi/client"], foreign
        assert not page.console_errors(), page.console_errors()
    finally:
        driver.quit()
