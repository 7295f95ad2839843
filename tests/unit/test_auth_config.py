"""auth_service settings from the environment."""

from __future__ import annotations

from auth_service.config import AuthSettings


def test_google_client_ids_read_as_a_comma_list_or_json(monkeypatch):
    monkeypatch.setenv("TERRA_GOOGLE_CLIENT_IDS", "web.apps, ios.apps ,android.apps")
    assert AuthSettings().google_client_ids == ["web.apps", "ios.apps", "android.apps"]
    monkeypatch.setenv("TERRA_GOOGLE_CLIENT_IDS", '["web.apps"]')
    assert AuthSettings().google_client_ids == ["web.apps"]
