"""The console across time: a reopened page finds what is still running, signing out
everywhere ends the other sessions too, and images whose presigned URL stopped working
are signed anew. Each step asserts what the page shows and leaves a screenshot in
`.terra-test-logs/browser/<test>/`."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.browser.test_console import PASSWORD, register

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


def start_a_long_generation(page, prompt: str, size: str = "512x512") -> object:
    page.click("nav a[href='#generate']")
    page.fill("textarea[name=prompt]", prompt)
    page.select("select[name=width]", size)  # four 512² loops on a CPU: a few seconds
    page.select("select[name=num_images]", "4")
    page.button("Generate")
    return page.one("article.job")


def test_a_reopened_page_follows_the_running_generation_to_its_images(open_console):
    page = open_console()
    register(page, "reopen")
    # Tiny FLUX is quick: three jobs in a row keep the last one waiting or running while
    # the page reloads.
    for n in range(3):
        start_a_long_generation(page, f"a windmill in the fog, take {n}")
        page.wait(lambda n=n: len(page.css("article.job")) == n + 1, 20, "the job's card")
    card = page.css("article.job")[0]  # the newest is first
    job_id = card.get_attribute("data-job")
    page.shot("running")
    page.driver.refresh()  # a reopened app: the cookie signs it in, the jobs list finds it
    page.text(".socket", "Live")
    page.click("nav a[href='#generate']")
    card = page.one(f"article.job[data-job='{job_id}']")
    page.text(f"article.job[data-job='{job_id}'] .status", "Generating: step", 60)
    page.shot("resumed-running")
    page.wait(lambda: card.get_attribute("data-done") == "true", 240, "the generation's end")
    page.wait(lambda: len(card.find_elements("css selector", "figure img")) == 4, 30,
              "the four images")
    time.sleep(2)  # anything shown twice would show by now
    assert len(page.css(f"article.job[data-job='{job_id}']")) == 1
    figures = card.find_elements("css selector", "figure")
    assert len(figures) == 4 and len({f.get_attribute("data-image") for f in figures}) == 4
    page.wait(lambda: all(page.driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", img) == 512
        for img in card.find_elements("css selector", "figure img")), 30, "the images loaded")
    page.shot("resumed-done")


def test_signing_out_everywhere_ends_the_other_sessions(open_console, relay):
    page = open_console()
    email = register(page, "everywhere")
    with httpx.Client(base_url=relay.url, timeout=10) as api:
        other = api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert other.status_code == 200, other.text
        tokens = other.json()
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert api.get("/api/me", headers=bearer).status_code == 200
        page.click("nav a[href='#account']")
        page.text("#account-heading", "Your account")
        page.shot("account")
        page.button("Sign out everywhere")
        page.one("#auth-heading")
        assert not page.css("nav a")
        page.shot("signed-out-everywhere")
        # The other session: its access token refused at once, its refresh token too.
        assert api.get("/api/me", headers=bearer).status_code == 401
        refreshed = api.post("/api/auth/refresh",
                             json={"refresh_token": tokens["refresh_token"]})
        assert refreshed.status_code == 401, refreshed.text
    # and this page's own cookie cannot sign it back in
    page.driver.refresh()
    page.one("#auth-heading")
    assert not page.css("nav a")


def test_an_image_whose_url_fails_is_signed_anew(open_console):
    page = open_console()
    register(page, "renew")
    page.click("nav a[href='#generate']")
    page.fill("textarea[name=prompt]", "a red kite over hills")
    page.select("select[name=width]", "256x256")
    page.button("Generate")
    card = page.one("article.job")
    page.wait(lambda: card.get_attribute("data-done") == "true", 120, "the generation")
    image_id = page.one("article.job figure").get_attribute("data-image")
    # S3 unreachable while the gallery opens: its image fails as an expired URL would.
    page.driver.execute_cdp_cmd("Network.enable", {})
    page.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": [f"{page.s3_origin}/*"]})
    page.click("nav a[href='#gallery']")
    img = page.one(f"li[data-image='{image_id}'] img")
    first = img.get_attribute("src")
    page.wait(lambda: int(img.get_attribute("data-renewals") or 0) >= 1, 20,
              "a renewal after the failed load")
    page.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    page.wait(lambda: page.driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", img) == 256, 30,
        "the image through its new URL")
    renewed = img.get_attribute("src")
    assert renewed != first and renewed.startswith(page.s3_origin)
    link = page.one(f"li[data-image='{image_id}'] a")
    assert link.get_attribute("href") == renewed  # the download link follows
    page.collect_logs()  # the blocked loads are logged by Chromium: expected
    page.console = [e for e in page.console if "ERR_BLOCKED_BY_CLIENT" not in e["message"]]
    page.shot("image-renewed")


ACCESS_TTL_S = 30  # the least auth_service allows


@pytest.fixture
def short_token_gateway(fresh_nats, s3, tmp_path):
    """A stack of its own whose access tokens live 30 s (on a server of its own, so the
    shared stack's auth_service does not answer for it): auth, a generator, a gateway."""
    import asyncio

    from testing.stack import ServiceStack, service_env
    from tests.browser.conftest import ROOT
    from tests.conftest import provision_all

    asyncio.run(provision_all(fresh_nats))
    env = service_env(
        fresh_nats.url, s3.endpoint, s3.service_keys,
        TERRA_NATS_CREDENTIALS_DIR=str(fresh_nats.credentials.directory),
        TERRA_LOG_FORMAT="text", TERRA_ACCESS_TOKEN_TTL_S=str(ACCESS_TTL_S),
        TERRA_GOOGLE_CLIENT_IDS="[]")
    stack = ServiceStack(env, tmp_path / "logs", cwd=ROOT)
    try:
        stack.start_auth()
        stack.start_service("generator", "generator_service", TERRA_PROGRESS_INTERVAL_S="0.05")
        yield stack.start_gateway()
    finally:
        stack.stop()


def opens(page) -> int:
    return int(page.driver.execute_script(
        "return document.documentElement.dataset.socketOpens || '0'"))


# The gateway first, so the browser is closed before the stack stops.
def test_tokens_renew_silently_and_a_4440_loses_nothing(short_token_gateway, open_console):
    page = open_console(base_url=short_token_gateway)
    register(page, "ttl")
    assert opens(page) == 1
    # A silent refresh well before the token expires; the socket follows the new token.
    page.wait(lambda: opens(page) >= 2, ACCESS_TTL_S, "the socket renewed after a refresh")
    refreshed_at = time.monotonic()
    page.text(".socket", "Live")
    assert page.css("nav a")  # still signed in, with no user action
    page.shot("refreshed")
    # Now the refresh cannot reach the gateway: the token expires with the socket open
    # (4440) while a generation runs, and its events wait for the page to come back.
    page.driver.execute_cdp_cmd("Network.enable", {})
    page.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/auth/refresh*"]})
    # Started a few seconds before the expiry, four 1024² images (~10 s) run across it.
    time.sleep(max(0.0, refreshed_at + ACCESS_TTL_S - 5 - time.monotonic()))
    card = start_a_long_generation(page, "a harbour at night", "1024x1024")
    page.wait(lambda: page.driver.execute_script(
        "return document.documentElement.dataset.socketClosed") == "4440", 20,
        "the gateway's 4440 at the token's expiry")
    page.text(".socket", "Reconnecting", 5)
    # Tiny FLUX may end the job just before the expiry: then no event is replayed, and
    # the checks below still hold (nothing shown twice, nothing missing).
    page.shot("token-expired", check=False)
    time.sleep(3)  # events published meanwhile are for the replay
    page.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    page.text(".socket", "Live", 30)
    assert opens(page) >= 3
    assert page.css("nav a")  # never signed out
    page.wait(lambda: card.get_attribute("data-done") == "true", 240, "the generation's end")
    page.wait(lambda: len(page.css("article.job figure")) == 4, 30, "the four images")
    time.sleep(2)  # anything shown twice would show by now
    figures = page.css("article.job figure")
    assert len(figures) == 4 and len({f.get_attribute("data-image") for f in figures}) == 4
    assert len(page.css("article.job")) == 1
    page.collect_logs()  # the blocked refreshes and the expired token's 401s: expected
    page.console = [e for e in page.console if "ERR_BLOCKED_BY_CLIENT" not in e["message"]
                    and "status of 401" not in e["message"]]
    page.shot("reconnected-after-4440")
