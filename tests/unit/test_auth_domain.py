"""Pure account rules: emails, password policy."""

from __future__ import annotations

from importlib import resources

import pytest

from auth_service.domain import (
    WeakPassword,
    check_password_policy,
    common_passwords,
    email_digest,
    normalise_email,
)


def test_emails_compare_case_insensitively_and_without_spaces():
    assert normalise_email("  Ana.Lopez@Example.COM ") == "ana.lopez@example.com"
    assert email_digest("ANA@example.com") == email_digest("ana@example.com ")


def test_email_digest_is_a_kv_safe_token():
    digest = email_digest("a+b@example.com")
    assert len(digest) == 64
    assert digest.isalnum()


@pytest.mark.parametrize("password", ["short", "123456789"])
def test_passwords_under_ten_characters_are_refused(password):
    with pytest.raises(WeakPassword, match="at least 10"):
        check_password_policy(password)


@pytest.mark.parametrize("password", ["password123", "1234567890", "qwertyuiop", "PassWord1234"])
def test_common_passwords_are_refused_whatever_the_case(password):
    with pytest.raises(WeakPassword, match="too common"):
        check_password_policy(password)


def test_the_email_itself_is_refused_as_a_password():
    with pytest.raises(WeakPassword):
        check_password_policy("Someone@Example.com", email="someone@example.com")


def test_repeated_characters_are_refused():
    with pytest.raises(WeakPassword):
        check_password_policy("abababababab")


def test_a_long_uncommon_password_is_accepted():
    check_password_policy("correct horse battery staple")


def test_the_common_password_list_is_shipped_and_sizeable():
    path = resources.files("auth_service").joinpath("data/common_passwords.txt")
    assert len(path.read_bytes()) < 200 * 1024
    common = common_passwords()
    assert len(common) > 2000
    assert {"123456", "password", "qwerty", "iloveyou", "letmein"} <= common
