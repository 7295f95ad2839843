"""docs/configuration.md is what the settings classes say: every field, never stale."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from terra.ops import config_page
from terra.ops.config_page import COMMAND, PAGE, env_names, field_row, render, sections
from terra.ops.services import SERVICES
from terra.settings import RuntimeSettings


def test_the_committed_page_is_what_the_settings_render():
    assert PAGE.read_text() == render(), f"docs/configuration.md is stale: run `{COMMAND}`"


def test_every_field_of_every_settings_class_is_on_the_page():
    page = render()
    classes = [section.settings for section in sections()]
    assert RuntimeSettings in classes
    assert {settings.__module__ for settings in classes} >= {
        service.config_module for service in SERVICES}
    for settings in classes:
        for name, field in settings.model_fields.items():
            for env in env_names(settings, name, field):
                assert f"`{env}`" in page, f"{settings.__name__}.{name} ({env}) is not on the page"


def test_each_service_section_lists_its_own_fields():
    page = render()
    for section in sections()[1:]:
        body = page.split(f"\n## {section.title}\n", 1)[1].split("\n## ", 1)[0]
        for name, field in section.fields.items():
            assert field_row(section.settings, name, field) in body


def test_no_secret_value_and_no_path_of_this_machine_reaches_the_page():
    page = render()
    assert "terra-local-secret" not in page
    assert "PRIVATE KEY" not in page
    assert str(Path.home()) not in page and str(Path(__file__).parents[2]) not in page


def test_the_page_is_written_and_checked(tmp_path, monkeypatch, capsys):
    page = tmp_path / "configuration.md"
    monkeypatch.setattr(config_page, "PAGE", page)
    assert config_page.main(["--check"]) == 1
    assert COMMAND in capsys.readouterr().err
    assert config_page.main(["--write"]) == 0
    assert config_page.main(["--check"]) == 0
    page.write_text(page.read_text() + "edited by hand\n")
    assert config_page.main(["--check"]) == 1


class _Example(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")

    token: SecretStr = SecretStr("sekrit")
    home: Path = Field(default_factory=Path.home, description="Somewhere here.")
    renamed: int = Field(default=3, validation_alias="OTHER_NAME", ge=1)
    sizes: list[int] = Field(default_factory=lambda: [1, 2])
    cap_bytes: int = 2 * 2**20
    workers: int = Field(default=4, json_schema_extra={"default_text": "one per CPU core"})


def test_rows_name_the_variable_and_hide_secrets_and_machine_paths():
    fields = _Example.model_fields
    token = field_row(_Example, "token", fields["token"])
    assert "`EXAMPLE_TOKEN`" in token and "sekrit" not in token
    assert "required in production" in token
    home = field_row(_Example, "home", fields["home"])
    assert "computed on the machine" in home and str(Path.home()) not in home
    assert "`OTHER_NAME`" in field_row(_Example, "renamed", fields["renamed"])
    assert "(≥ 1)" in field_row(_Example, "renamed", fields["renamed"])
    assert "`[1, 2]`" in field_row(_Example, "sizes", fields["sizes"])
    assert "(2 MiB)" in field_row(_Example, "cap_bytes", fields["cap_bytes"])
    assert "| one per CPU core |" in field_row(_Example, "workers", fields["workers"])

