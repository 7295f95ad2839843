"""The throttles' pure rules: windows, the email slow-down, key names, client networks,
their settings, and how the gateway shows a refusal."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from auth_service.config import AuthSettings
from auth_service.throttle import (
    Slowdown,
    Window,
    client_network,
    forgiven,
    key_token,
    without,
)
from contracts.auth import AuthErrorCode, AuthFailure
from gateway.auth_client import failure_to_problem

WINDOW = 900.0


# --- windows ---------------------------------------------------------------------------------


def test_a_window_admits_up_to_its_limit_then_refuses():
    window = Window(limit=3, window_s=WINDOW)
    times: list[float] = []
    for t in (100.0, 110.0, 120.0):
        admitted = window.admit(times, now=t)
        assert admitted is not None and admitted[-1] == t
        times = admitted
    assert window.admit(times, now=130.0) is None
    assert times == [100.0, 110.0, 120.0]


def test_retry_after_is_when_the_oldest_counted_attempt_leaves():
    window = Window(limit=3, window_s=WINDOW)
    times = [100.0, 110.0, 120.0]
    assert window.retry_after(times, now=130.0) == 100 + 900 - 130
    assert window.retry_after(times, now=999.5) == 1  # never 0 while refused
    assert window.retry_after(times, now=1000.0) is None
    assert window.admit(times, now=1000.0) == [110.0, 120.0, 1000.0]


def test_old_attempts_are_dropped_and_ones_slightly_ahead_still_count():
    window = Window(limit=2, window_s=WINDOW)
    assert window.recent([1.0, 500.0, 501.0, 1300.0], now=1400.0) == [501.0, 1300.0]
    # Another replica's clock a little ahead: its attempt must not vanish from the count.
    assert window.admit([1400.2, 1400.1], now=1400.0) is None
    assert window.retry_after([1400.2, 1400.1], now=1400.0) == WINDOW  # never above the window


def test_a_window_never_grows_past_its_limit():
    window = Window(limit=5, window_s=WINDOW)
    times: list[float] = []
    for t in range(100):
        times = window.admit(times, now=float(t)) or times
    assert len(times) == 5


# --- the email's slow-down -------------------------------------------------------------------


def test_the_slowdown_starts_after_enough_failures_and_doubles_up_to_its_cap():
    slow = Slowdown(after=10, first_delay_s=0.25, max_delay_s=3.0, window_s=WINDOW)
    assert [slow.delay_s(n) for n in (0, 9)] == [0.0, 0.0]
    assert [slow.delay_s(n) for n in (10, 11, 12, 13, 14, 15)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert slow.delay_s(10_000) == 3.0


def test_the_slowdown_log_keeps_just_enough_to_stay_at_the_cap():
    slow = Slowdown(after=10, first_delay_s=0.25, max_delay_s=3.0, window_s=WINDOW)
    assert slow.delay_s(slow.memory - 1) == slow.max_delay_s  # one expiry later: still capped
    assert slow.delay_s(slow.memory - 2) < slow.max_delay_s
    full = [float(t) for t in range(slow.memory)]
    assert slow.admit(full, now=100.0) is None  # a full log is not written again
    assert slow.delay_for(full, now=100.0) == 3.0
    assert slow.admit(full[1:], now=100.0) == [*full[1:], 100.0]


def test_a_slowdown_that_cannot_grow_is_refused():
    with pytest.raises(ValueError):
        Slowdown(after=1, first_delay_s=0.0, max_delay_s=1.0, window_s=WINDOW)
    with pytest.raises(ValueError):
        Slowdown(after=1, first_delay_s=2.0, max_delay_s=1.0, window_s=WINDOW)


# --- taking attempts back --------------------------------------------------------------------


def test_a_success_takes_back_exactly_its_own_attempt():
    assert without([1.0, 2.0, 2.0, 3.0], 2.0) == [1.0, 2.0, 3.0]
    assert without([1.0, 3.0], 2.0) is None


def test_a_success_forgives_the_attempts_up_to_it():
    assert forgiven([1.0, 2.0, 3.0, 4.0], 3.0) == [4.0]  # 4.0: one still being checked
    assert forgiven([4.0], 3.0) is None


# --- key names and networks ------------------------------------------------------------------


def test_key_tokens_are_subject_safe_and_reveal_nothing_without_the_secret():
    token = key_token(b"secret", "pair", "ada@example.com", "203.0.113.7")
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    assert token == key_token(b"secret", "pair", "ada@example.com", "203.0.113.7")
    assert token != key_token(b"other secret", "pair", "ada@example.com", "203.0.113.7")
    # Parts are separated, so moving a boundary names another key.
    assert key_token(b"s", "ab", "c") != key_token(b"s", "a", "bc")


def test_a_client_network_is_an_ipv4_address_or_an_ipv6_slash_64():
    assert client_network(" 203.0.113.7 ") == "203.0.113.7"
    assert client_network("::ffff:203.0.113.7") == "203.0.113.7"
    one = client_network("2001:db8:1:2::1")
    assert one == "2001:db8:1:2::/64"
    assert client_network("2001:DB8:1:2:ffff:ffff:ffff:ffff") == one
    assert client_network("2001:db8:1:3::1") != one
    assert client_network("Some-Proxy-Name") == "some-proxy-name"  # not an address: as is


# --- settings --------------------------------------------------------------------------------


def test_throttle_settings_have_safe_defaults():
    settings = AuthSettings()
    assert settings.login_max_failures_per_email == 5
    assert settings.login_max_failures_per_address == 30
    assert settings.login_slowdown_after_failures == 10
    assert settings.login_slowdown_max_delay_s < 5.0  # under the gateway's wait for replies
    assert settings.registration_max_per_address == 10
    assert settings.registration_window_s == 3600


def test_windows_cannot_outlast_their_buckets_and_the_cap_sits_above_the_first_delay():
    with pytest.raises(ValidationError):
        AuthSettings(login_window_s=3600)  # LOGIN_THROTTLE_KV forgets after 15 min
    with pytest.raises(ValidationError):
        AuthSettings(registration_window_s=2 * 86_400)
    with pytest.raises(ValidationError):
        AuthSettings(login_slowdown_first_delay_s=2.0, login_slowdown_max_delay_s=1.0)


def test_the_registration_limit_reads_its_environment_variable(monkeypatch):
    monkeypatch.setenv("TERRA_REGISTRATION_MAX_PER_ADDRESS", "10000")
    monkeypatch.setenv("TERRA_LOGIN_MAX_FAILURES_PER_ADDRESS", "10000")
    settings = AuthSettings()
    assert settings.registration_max_per_address == 10_000
    assert settings.login_max_failures_per_address == 10_000


def test_the_key_secret_is_stable_and_follows_the_signing_key():
    settings = AuthSettings()
    assert settings.throttle_key_secret() == AuthSettings().throttle_key_secret()
    assert len(settings.throttle_key_secret()) == 32
    assert settings.throttle_key_secret() not in settings.signing_key.get_secret_value().encode()


# --- the gateway's answer --------------------------------------------------------------------


def test_a_refusal_is_a_429_with_retry_after():
    problem = failure_to_problem(
        AuthFailure(code=AuthErrorCode.RATE_LIMITED, detail="Too many.", retry_after_s=42)
    )
    assert (problem.status, problem.headers["Retry-After"]) == (429, "42")


def test_a_refusal_without_a_wait_still_says_when_to_retry():
    problem = failure_to_problem(AuthFailure(code=AuthErrorCode.RATE_LIMITED, detail="Too many."))
    assert problem.status == 429
    assert int(problem.headers["Retry-After"]) > 0
