"""auth_service's refusals as the gateway's HTTP problems."""

from __future__ import annotations

import pytest

from contracts.auth import AuthErrorCode, AuthFailure
from gateway.auth_client import _STATUS, failure_to_problem


@pytest.mark.parametrize("code", list(AuthErrorCode))
def test_every_refusal_has_its_own_answer(code):
    """A code missing from the table would be answered 503, as if auth were down."""
    assert code in _STATUS


def test_auths_own_refusal_of_an_access_token_reads_like_the_gateways():
    """auth_service checks the caller's token again (deleting an account, signing out
    everywhere): a refusal there is the 401 a client gets for a bad token anywhere."""
    problem = failure_to_problem(AuthFailure(code=AuthErrorCode.INVALID_ACCESS_TOKEN,
                                             detail="The access token has been revoked."))
    assert (problem.status, problem.slug) == (401, "unauthorized")
    assert problem.headers["WWW-Authenticate"] == "Bearer"
    assert problem.extensions["code"] == "invalid_access_token"
