"""docs/security-matrix.md is what the permission matrices say, never stale."""

from __future__ import annotations

from terra.ops.security_matrix import PAGE, render


def test_the_committed_page_is_what_the_matrices_render():
    assert PAGE.read_text() == render(), (
        "docs/security-matrix.md is stale: run `python -m terra.ops.security_matrix --write`")


def test_every_identity_has_its_section_and_the_operator_is_named_apart():
    page = render()
    for name in ("gateway", "auth_service", "prompt_service", "trainer_service",
                 "generator_service", "operator"):
        assert f"## `{name}`" in page
    # The generator reads models and writes images; nothing of uploads.
    generator = page.split("## `generator_service`")[1].split("## ")[0]
    assert "`images/*`" in generator and "uploads/" not in generator
