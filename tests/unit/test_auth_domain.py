"""Pure account rules: emails, password policy, the login failure window."""

from __future__ import annotations

from importlib import resources

import pytest

from auth_service.domain import (
    WeakPassword,
    check_password_policy,
    common_passwords,
    email_digest,
    normalise_email,
    recent_failures,
    retry_after,
    with_failure,
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


WINDOW = 900.0


def test_failures_outside_the_window_are_forgotten():
    assert recent_failures([10.0, 500.0, 1000.0], now=1400.0, window_s=WINDOW) == [1000.0]


def test_attempts_are_allowed_under_the_limit():
    assert retry_after([100.0, 200.0], now=300.0, window_s=WINDOW, limit=3) is None


def test_at_the_limit_the_wait_lasts_until_the_oldest_failure_leaves_the_window():
    failures = [100.0, 200.0, 300.0]
    assert retry_after(failures, now=300.0, window_s=WINDOW, limit=3) == 700
    assert retry_after(failures, now=999.5, window_s=WINDOW, limit=3) == 1
    assert retry_after(failures, now=1000.0, window_s=WINDOW, limit=3) is None


def test_over_the_limit_the_wait_counts_only_the_failures_that_matter():
    failures = [100.0, 200.0, 300.0, 400.0]
    # Two more failures than allowed would leave only once the first two are gone.
    assert retry_after(failures, now=400.0, window_s=WINDOW, limit=3) == 200 + WINDOW - 400


def test_a_recorded_failure_is_kept_and_the_list_stays_bounded():
    failures: list[float] = []
    for t in range(10):
        failures = with_failure(failures, now=float(t), window_s=WINDOW, limit=3)
    assert failures == [7.0, 8.0, 9.0]
