"""Expo push (one token for iOS and Android). Expo and the platforms see the message in
clear, so it carries ids and a deep link, never the prompt. A send gives a ticket; the
receipt read later says whether the phone still has the app (`read_receipts`)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import aiohttp

from contracts.notifications import Device, Notice
from notifier_service.config import NotifierSettings
from notifier_service.delivery import Outcome, OutcomeKind
from notifier_service.egress import Answer, post
from notifier_service.texts import render

# Expo's ticket and receipt error codes, by what they mean for the device.
GONE_ERRORS = frozenset({"DeviceNotRegistered"})
RETRY_ERRORS = frozenset({"MessageRateExceeded"})
# Expo reads at most 1000 receipt ids per request.
RECEIPTS_PER_REQUEST = 1000


class ReceiptsUnavailable(Exception):
    """Expo's receipts could not be read now (try again later)."""


def message(device: Device, notice: Notice, delivery_id: str) -> dict:
    text = render(notice, device.language)
    return {
        "to": device.token, "title": text.title, "body": text.body,
        "data": {"event": notice.event, "job_id": notice.job_id,
                 "model_id": notice.model_id, "image_ids": notice.image_ids,
                 "deep_link": notice.deep_link, "delivery_id": delivery_id},
        "sound": "default", "priority": "high",
    }


class ExpoSender:
    """`ExpoSender(session, settings)`: `session` from `egress.egress_session`; reads
    `expo_push_url`, `expo_receipts_url` and `expo_access_token`."""

    def __init__(self, session: aiohttp.ClientSession, settings: NotifierSettings) -> None:
        self.session = session
        self.send_url = settings.expo_push_url
        self.receipts_url = settings.expo_receipts_url
        self.headers = {"content-type": "application/json", "accept": "application/json"}
        if settings.expo_access_token is not None:
            token = settings.expo_access_token.get_secret_value()
            self.headers["authorization"] = f"Bearer {token}"

    async def send(self, target: Device, notice: Notice, delivery_id: str) -> Outcome:
        body = json.dumps([message(target, notice, delivery_id)]).encode()
        answer = await post(self.session, self.send_url, body=body, headers=self.headers)
        return answer if isinstance(answer, Outcome) else outcome_of(answer)

    async def read_receipts(self, ticket_ids: Iterable[str]) -> dict[str, str | None]:
        """Ticket id -> None (delivered to Apple or Google) or Expo's error code, for the
        receipts Expo has (the others are not ready or have expired).
        `ReceiptsUnavailable` when Expo cannot be asked now."""
        ids = list(ticket_ids)
        found: dict[str, str | None] = {}
        for start in range(0, len(ids), RECEIPTS_PER_REQUEST):
            chunk = ids[start:start + RECEIPTS_PER_REQUEST]
            answer = await post(self.session, self.receipts_url,
                                body=json.dumps({"ids": chunk}).encode(), headers=self.headers)
            if isinstance(answer, Outcome) or answer.status != 200:
                summary = answer.summary if isinstance(answer, Outcome) else (
                    f"HTTP {answer.status}: {answer.excerpt()}")
                raise ReceiptsUnavailable(f"Expo's receipts: {summary}")
            try:
                receipts = json.loads(answer.body)["data"]
                for ticket_id, receipt in receipts.items():
                    found[ticket_id] = (None if receipt.get("status") == "ok"
                                        else _error_code(receipt))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ReceiptsUnavailable(f"Expo's receipts are unreadable: {exc}") from exc
        return found


def _error_code(ticket_or_receipt: dict) -> str:
    details = ticket_or_receipt.get("details") or {}
    return str(details.get("error") or "unknown error")


def outcome_of(answer: Answer) -> Outcome:
    if answer.status == 200:
        try:
            ticket = json.loads(answer.body)["data"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return answer.retry(f"unreadable ticket: {exc}")
        if not isinstance(ticket, dict):
            return answer.retry("unreadable ticket")
        if ticket.get("status") == "ok" and ticket.get("id"):
            return Outcome(OutcomeKind.DELIVERED, status_code=200,
                           duration_ms=answer.duration_ms, expo_tickets=(str(ticket["id"]),))
        code = _error_code(ticket)
        error = f"{code}: {ticket.get('message', '')}"[:300]
        if code in GONE_ERRORS:
            return answer.outcome(OutcomeKind.GONE, error)
        if code in RETRY_ERRORS:
            return answer.retry(error)
        # MessageTooBig, InvalidCredentials (the operator's FCM/APNs keys at Expo), ...
        return answer.outcome(OutcomeKind.REFUSED, error)
    # 400 (a malformed message), 401/403 (the access token): not this device's fault.
    return answer.otherwise()
