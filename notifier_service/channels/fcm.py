"""FCM HTTP v1, for apps that use Firebase directly: an OAuth2 token from the operator's
service account key (google-auth), one message per device. Google sees the message in
clear, so it carries ids and a deep link, never the prompt."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import requests
from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from contracts.notifications import Device, Notice
from notifier_service.config import NotifierSettings
from notifier_service.delivery import Outcome, OutcomeKind
from notifier_service.egress import Answer, post
from notifier_service.texts import render

SCOPES = ("https://www.googleapis.com/auth/firebase.messaging",)
TOKEN_TIMEOUT_S = 10.0


def message(device: Device, notice: Notice, delivery_id: str) -> dict:
    """An FCM v1 message: `data` values must all be strings."""
    text = render(notice, device.language)
    data = {"event": notice.event, "job_id": notice.job_id or "",
            "model_id": notice.model_id or "", "image_ids": ",".join(notice.image_ids),
            "deep_link": notice.deep_link, "delivery_id": delivery_id}
    return {"message": {
        "token": device.token,
        "notification": {"title": text.title, "body": text.body},
        "data": data,
        "android": {"priority": "high"},
        "apns": {"headers": {"apns-priority": "10"}},
    }}


class _TokenRequest(Request):
    """google-auth's requests transport with a short timeout and no proxy or netrc from
    the environment."""

    def __init__(self) -> None:
        session = requests.Session()
        session.trust_env = False
        super().__init__(session)

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        return super().__call__(url, method, body, headers, timeout=TOKEN_TIMEOUT_S, **kwargs)


class FcmSender:
    """`FcmSender(session, settings)`: `session` from `egress.egress_session`; the key
    from `fcm_service_account_file` (or `credentials`, for tests), the base URL from
    `fcm_url`. Without a key every send is REFUSED."""

    def __init__(self, session: aiohttp.ClientSession, settings: NotifierSettings, *,
                 credentials: service_account.Credentials | None = None) -> None:
        self.session = session
        self.fcm_url = settings.fcm_url.rstrip("/")
        if credentials is None and settings.fcm_service_account_file is not None:
            credentials = service_account.Credentials.from_service_account_file(
                str(settings.fcm_service_account_file), scopes=list(SCOPES))
        self.credentials = credentials
        self._refreshing = asyncio.Lock()
        self._transport: _TokenRequest | None = None

    @property
    def configured(self) -> bool:
        return self.credentials is not None

    async def send(self, target: Device, notice: Notice, delivery_id: str) -> Outcome:
        if self.credentials is None:
            return Outcome(OutcomeKind.REFUSED, error="FCM is not configured "
                           "(TERRA_FCM_SERVICE_ACCOUNT_FILE)")
        try:
            token = await self._access_token()
        except (GoogleAuthError, TimeoutError) as exc:
            return Outcome(OutcomeKind.RETRY,
                           error=f"no FCM access token: {exc or 'timed out'}"[:300])
        url = f"{self.fcm_url}/v1/projects/{self.credentials.project_id}/messages:send"
        headers = {"authorization": f"Bearer {token}",
                   "content-type": "application/json; charset=UTF-8"}
        body = json.dumps(message(target, notice, delivery_id)).encode()
        answer = await post(self.session, url, body=body, headers=headers)
        if isinstance(answer, Outcome):
            return answer
        if answer.status == 401:
            self._forget(token)
        return outcome_of(answer)

    async def _access_token(self) -> str:
        """A valid token; refreshed (a blocking HTTP call, so in a thread) by one caller
        while the others wait for it."""
        credentials = self.credentials
        assert credentials is not None
        async with self._refreshing:
            if not credentials.valid:
                if self._transport is None:
                    self._transport = _TokenRequest()
                await asyncio.wait_for(
                    asyncio.to_thread(credentials.refresh, self._transport),
                    TOKEN_TIMEOUT_S * 2)
            return credentials.token

    def _forget(self, token: str) -> None:
        """FCM refused the token (revoked, expired early): the next send gets another."""
        if self.credentials is not None and self.credentials.token == token:
            self.credentials.token = None


def error_codes(answer: Answer) -> set[str]:
    """FCM's `errorCode`s of an error answer (`UNREGISTERED`, `INVALID_ARGUMENT`, ...)."""
    try:
        error = json.loads(answer.body)["error"]
    except (ValueError, KeyError, TypeError):
        return set()
    codes = {str(error.get("status", ""))} if isinstance(error, dict) else set()
    for detail in (error.get("details") or []) if isinstance(error, dict) else []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            codes.add(str(detail["errorCode"]))
    return codes - {""}


def outcome_of(answer: Answer) -> Outcome:
    status = answer.status
    if status == 200:
        return answer.outcome(OutcomeKind.DELIVERED)
    codes = error_codes(answer)
    error = ", ".join(sorted(codes)) or answer.excerpt() or None
    # By its code only: a bare 404 is as likely a wrong TERRA_FCM_URL or project, which
    # must not delete every device.
    if "UNREGISTERED" in codes:
        return answer.outcome(OutcomeKind.GONE, error)
    if status == 401:
        return answer.retry("the access token was refused; a new one is fetched")
    if status == 404:
        return answer.retry(error or "FCM answered 404 without UNREGISTERED (is "
                            "TERRA_FCM_URL, or the key's project, right?)")
    # 400 INVALID_ARGUMENT, 403 SENDER_ID_MISMATCH: this message can never go.
    return answer.otherwise(error)
