"""The web console in a real browser, step by step as a person uses it, against the whole
stack: each step asserts what the page shows and leaves a screenshot in
`.terra-test-logs/browser/<test>/`. The whole flow (register, optimise, upload 12 photos,
train, generate with the new LoRA, the gallery, delete the account) takes about half a
minute on tiny FLUX, so `make test` runs all of it; `make e2e-browser` runs these alone.

`UPDATE_README_SHOT=1` also copies the generation's screenshot to docs/console.png (the
README's picture)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

README_SHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"
PASSWORD = "correct horse battery staple"


def unique_email(tag: str) -> str:
    return f"{tag}-{time.time_ns()}@example.com"


def photo(seed: int, path, size=(320, 400)) -> None:
    """A distinct picture per seed (blocks of colour: no two are near-duplicates)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (8, 10, 3), dtype=np.uint8)
    Image.fromarray(blocks).resize(size, Image.NEAREST).save(path, format="JPEG")


def register(page, tag: str) -> str:
    page.one("#auth-heading")
    page.shot("sign-in-page")
    page.button("Create an account")
    page.text("#auth-heading", "Create an account")
    email = unique_email(tag)
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=display_name]", "Ada")
    page.click("form button[type=submit]")
    page.text("#prompt-heading", "Improve a prompt")
    page.text(".socket", "Live")
    page.shot("registered")
    return email


def reload_sign_out_and_in(page, email: str) -> None:
    """A reload keeps the session (a silent refresh from the httpOnly cookie); the page
    keeps no token where scripts or URLs could leak it; sign out, then in again."""
    page.driver.refresh()
    page.text("#prompt-heading", "Improve a prompt")
    page.text(".socket", "Live")
    assert page.driver.execute_script("return localStorage.length + sessionStorage.length") == 0
    cookies = page.driver.execute_script("return document.cookie")
    assert "terra_refresh" not in cookies and "terra_csrf" in cookies  # httpOnly: unseen
    page.button("Sign out")
    page.one("#auth-heading")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.text("#prompt-heading", "Improve a prompt")
    page.text(".socket", "Live")
    page.shot("signed-in-again")


def optimise(page) -> str:
    page.fill("textarea[name=prompt]", "me on a beach at sunset, 4k, masterpiece")
    page.select("select[name=style]", "cinematic")
    page.button("Optimise")
    page.one(".diff ins")
    page.text(".result h2", "Changes")
    page.text(".changes li", "cinematic")
    page.shot("optimised")
    kept = page.one("textarea[name=final_prompt]").get_attribute("value")
    assert "Cinematic" in kept or "cinematic" in kept, kept
    page.button("Accept")
    page.text(".notice", "Kept")
    page.shot("accepted")
    return kept


def generate(page, prompt: str, *, expect_lora: str | None = None) -> str:
    page.click("nav a[href='#generate']")
    field = page.one("textarea[name=prompt]")
    assert field.get_attribute("value") == prompt  # prefilled from the accepted optimisation
    if expect_lora:  # the newest model is chosen: what `auto` takes, shown
        page.text("select[name=lora_id] option", expect_lora)
        page.wait(lambda: page.driver.execute_script(
            "const s = document.querySelector('select[name=lora_id]');"
            "return s.options[s.selectedIndex].text") == expect_lora, 10, "the LoRA chosen")
    page.select("select[name=width]", "256x256")
    page.fill("input[name=seed]", "7")
    page.button("Generate")
    card = page.one("article.job")
    page.wait(lambda: card.get_attribute("data-done") == "true", 120, "the generation to end")
    image = page.one("article.job figure img")
    page.wait(lambda: page.driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", image) == 256, 30,
        "the image to load from its presigned URL")
    assert "Done" in card.text
    if expect_lora:
        assert page.one("article.job .model").text == f"FLUX.1 dev + {expect_lora}"
    page.shot("generated")
    return page.one("article.job figure").get_attribute("data-image")


def gallery_delete(page, image_id: str) -> None:
    page.click("nav a[href='#gallery']")
    item = page.one(f"li[data-image='{image_id}']")
    assert "Kept until" in item.text  # the expiry date
    assert item.find_element("css selector", "a").get_attribute("href").startswith("http")
    page.shot("gallery")
    page.button("Delete", within=f"li[data-image='{image_id}']")
    page.accept_dialog()
    page.text(".gallery", "No images yet.")
    page.shot("gallery-emptied")


def cancel_a_generation(page) -> None:
    page.click("nav a[href='#generate']")
    page.select("select[name=width]", "256x256")
    page.select("select[name=num_images]", "4")
    before = len(page.css("article.job"))
    page.button("Generate")
    page.wait(lambda: len(page.css("article.job")) == before + 1, 20, "the new job's card")
    card = page.css("article.job")[0]  # the newest is first
    card.find_element("xpath", ".//button[normalize-space()='Cancel']").click()
    page.wait(lambda: "Cancelled" in card.text, 60, "the cancelled generation")
    assert not card.find_elements("css selector", "figure")
    page.shot("generation-cancelled")


def delete_the_model(page, trigger: str) -> None:
    page.click("nav a[href='#train']")
    page.text(".model-list li", trigger)
    page.click(f"button[aria-label='Delete model {trigger}']")
    page.accept_dialog()
    page.wait(lambda: not [li for li in page.css(".model-list li") if trigger in li.text], 30,
              "the model gone from the list")
    page.shot("model-deleted")


def delete_the_photo_set(page) -> None:
    page.text(".sets li", "12 photos")
    page.button("Delete", within=".sets li")
    page.accept_dialog()
    page.wait(lambda: not page.css(".sets li"), 30, "the photo set gone")
    page.shot("photo-set-deleted")


def delete_account(page) -> None:
    page.click("nav a[href='#account']")
    page.text("#account-heading", "Your account")
    # A password change ends every other session; this page stays signed in, live.
    page.fill("input[name=current_password]", PASSWORD)
    page.fill("input[name=new_password]", "a brand new passphrase 77")
    page.button("Change password")
    page.text(".notice", "Password changed")
    page.text(".socket", "Live")
    page.fill("input[name=confirm]", "DELETE")
    page.shot("account")
    page.button("Delete my account")
    page.text(".notice", "Your account is closed")
    page.one("#auth-heading")
    page.shot("account-deleted")


def train(page, photos_dir) -> str:
    page.click("nav a[href='#train']")
    paths = []
    for i in range(12):
        path = photos_dir / f"me-{i:02d}.jpg"
        photo(i, path)
        paths.append(str(path))
    page.one("input[type=file]").send_keys("\n".join(paths))
    page.wait(lambda: len(page.css(".thumbs img")) == 12, 20, "12 thumbnails")
    page.text("#train-heading ~ form .hint", "12 selected")
    page.shot("photos-chosen")
    page.button("Upload")
    page.text(".actions .hint", "Photo set ready: 12 photos.", 60)
    # the bar followed the upload's progress events to the end
    assert page.driver.execute_script(
        "return document.querySelector('#train-heading ~ form progress').value") == 1
    page.fill("input[name=steps]", "4")
    page.shot("uploaded")
    page.button("Start training")
    status = page.text(".job .status", "Training:")
    page.text(".job p", "Step", 120)
    page.text(".job .status", "ready", 240)
    page.one(".samples img")
    trigger = page.one(".job h2").text
    page.text(".model-list li", f"{trigger}: ready")
    assert "ready" in status.text
    page.shot("trained")
    return trigger


def cancel_a_training(page) -> None:
    """A second training on the same photo set, cancelled while it runs."""
    page.fill("input[name=steps]", "5000")
    page.button("Start training")
    page.text(".job .status", "running", 60)
    page.text(".job p", "Step", 60)
    page.button("Cancel training")
    page.text(".job .status", "cancelled", 60)
    assert "left" not in page.one(".job .status + progress + p").text  # no ETA once it ended
    page.text(".model-list li", "cancelled")
    page.shot("training-cancelled")


def test_the_console_from_sign_up_to_account_deletion(open_console, tmp_path):
    page = open_console()
    email = register(page, "flow")
    reload_sign_out_and_in(page, email)
    prompt = optimise(page)
    trigger = train(page, tmp_path)
    cancel_a_training(page)
    image_id = generate(page, prompt, expect_lora=trigger)
    if os.environ.get("UPDATE_README_SHOT"):  # the README's picture, on request
        shot = Image.open(page.shots / f"{page.step:02d}-generated.png").convert("RGB")
        shot.quantize(colors=96).save(README_SHOT, optimize=True)  # small enough to commit
    gallery_delete(page, image_id)
    cancel_a_generation(page)
    delete_the_model(page, trigger)
    delete_the_photo_set(page)
    delete_account(page)


def test_a_refused_photo_set_names_each_file_and_why(open_console, tmp_path):
    page = open_console()
    register(page, "photos")
    page.click("nav a[href='#train']")
    paths = []
    for i in range(9):
        photo(i, tmp_path / f"me-{i}.jpg")
        paths.append(tmp_path / f"me-{i}.jpg")
    (tmp_path / "copy.jpg").write_bytes((tmp_path / "me-0.jpg").read_bytes())
    photo(99, tmp_path / "small.jpg", size=(120, 160))
    page.one("input[type=file]").send_keys("\n".join(
        str(p) for p in [*paths, tmp_path / "copy.jpg", tmp_path / "small.jpg"]))
    page.wait(lambda: len(page.css(".thumbs img")) == 11, 20, "11 thumbnails")
    page.button("Upload")
    page.text(".thumbs .rejected .file-error", "copy.jpg: near-duplicate of me-0.jpg")
    page.text(".thumbs .rejected .file-error", "small.jpg:")
    assert len(page.css(".thumbs .rejected")) == 2
    page.text(".form-error", "9 usable photos")
    page.shot("photos-refused", check=False)
    page.collect_logs()  # Chromium logs the 422 itself as a failed resource: expected
    page.console = [e for e in page.console if "status of 422" not in e["message"]]
    assert not page.axe()


def test_a_cut_socket_reconnects_and_the_image_shows_once(open_console, relay):
    page = open_console()
    register(page, "cut")
    page.click("nav a[href='#generate']")
    page.fill("textarea[name=prompt]", "a lighthouse at dusk")
    page.select("select[name=width]", "256x256")
    page.select("select[name=num_images]", "4")  # four denoising loops on a CPU: a while
    page.button("Generate")
    card = page.one("article.job")
    # The gateway's answer is in, the job's events are not: cut the network now and keep
    # it slow, so the job ends while the page is away.
    relay.cut(hold_s=5)
    page.text(".socket", "Reconnecting", 10)
    assert card.get_attribute("data-done") is None  # the ending can only come by replay
    page.shot("reconnecting", check=False)  # axe runs below, once the page is settled
    page.text(".socket", "Live", 30)
    page.wait(lambda: card.get_attribute("data-done") == "true", 60, "the replayed ending")
    page.wait(lambda: len(page.css("article.job figure")) == 4, 20, "the images")
    time.sleep(2)  # anything shown twice would show by now
    assert len(page.css("article.job figure")) == 4
    assert len({f.get_attribute("data-image") for f in page.css("article.job figure")}) == 4
    assert len(page.css("article.job")) == 1
    page.shot("reconnected")


def test_french_and_a_phone_layout(open_console):
    page = open_console(language="fr-FR", width=390, height=844)
    page.text("#auth-heading", "Se connecter")
    assert page.driver.execute_script("return document.documentElement.lang") == "fr"
    # one column: the form is as wide as the screen allows, no horizontal scrolling
    assert page.driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
    page.shot("phone-fr")
    page.button("Créer un compte")
    page.fill("input[name=email]", unique_email("fr"))
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.text("#prompt-heading", "Améliorer un prompt")
    page.text(".socket", "En direct")
    for section, heading in (("generate", "Générer des images"), ("train", "Entraîner"),
                             ("gallery", "Vos images"), ("account", "Votre compte")):
        page.click(f"nav a[href='#{section}']")
        page.text("main h1", heading)
        assert page.driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"), section
        page.shot(f"phone-fr-{section}")


def test_errors_show_next_to_the_field_they_name(open_console):
    page = open_console()
    page.button("Create an account")
    page.fill("input[name=email]", unique_email("weak"))
    page.fill("input[name=password]", "password12")  # a common password: 422 weak-password
    page.click("form button[type=submit]")
    error = page.one(".field-error")
    assert error.find_element("xpath", "..").find_element("css selector", "input").get_attribute(
        "name") == "password"
    assert page.one("input[name=password]").get_attribute("aria-invalid") == "true"
    page.shot("weak-password", check=False)
    # the 422 itself is logged by Chromium as a failed resource: that one is expected
    page.collect_logs()
    page.console = [e for e in page.console if "status of 422" not in e["message"]]
    assert not page.axe()


def test_a_429_shows_its_wait_and_holds_the_button(open_console, browser_stack):
    url = browser_stack.start_gateway(TERRA_GOOGLE_CLIENT_IDS="[]", TERRA_PROMPT_RATE_LIMIT="1",
                                      TERRA_PROMPT_RATE_WINDOW_S="30")
    page = open_console(base_url=url)
    register(page, "rate")
    page.fill("textarea[name=prompt]", "a red fox in the snow")
    page.button("Optimise")
    page.one(".diff")
    page.button("Optimise")
    alert = page.text(".form-error", "try again in")
    assert page.one("form button[type=submit]").get_attribute("disabled") is not None
    assert "s." in alert.text
    page.shot("rate-limited", check=False)
    page.collect_logs()  # Chromium logs the 429 itself as a failed resource: expected
    page.console = [e for e in page.console if "status of 429" not in e["message"]]
    assert not page.axe()
