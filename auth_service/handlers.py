"""Use cases: one method per request; dependencies come in through the constructor.

Methods return the contract's success reply or raise `AuthError`; the entrypoint turns
errors into `AuthFailure` replies.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from auth_service.domain import (
    AuthError,
    InvalidCredentials,
    NoPassword,
    RetiredRequest,
    UserRecord,
    WeakPassword,
    WrongPassword,
    check_password_policy,
    normalise_email,
)
from auth_service.google import GoogleIdentity, GoogleVerifier
from auth_service.passwords import PasswordHasher
from auth_service.repository import (
    RefreshTokenEntry,
    RefreshTokenStore,
    TokenFamily,
    UserRepository,
)
from auth_service.throttle import LoginThrottle, SignupThrottle
from auth_service.tokens import InvalidAccessToken, TokenIssuer
from contracts.auth import (
    AccountDeleted,
    AuthErrorCode,
    ChangePassword,
    DeleteAccount,
    DeleteAccountV1,
    Done,
    GetSigningKeys,
    GetUser,
    LoginWithGoogle,
    LoginWithPassword,
    Logout,
    LogoutV1,
    Provider,
    RefreshTokens,
    Register,
    SigningKeys,
    TokenPair,
    UserRegistered,
    UserReply,
)
from contracts.base import Event, utcnow
from terra.jobs.deleted_accounts import DeletedAccounts
from terra.nats.events import EventPublisher
from terra.records.revocations import Revocations, is_revoked

log = logging.getLogger(__name__)

# As the gateway's own check of access tokens: a token it has just let through is not
# refused here over a few seconds between the two clocks.
ACCESS_TOKEN_LEEWAY_S = 5


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _after_second_of(revoked_at: datetime) -> None:
    """Access tokens carry whole seconds (`iat`); the rule refuses iat <= revoked_at.
    Answering only once that second is over means a sign-in after this answer (or a
    session started by it) gets a later `iat`, so its tokens work."""
    await asyncio.sleep(max(0.0, math.floor(revoked_at.timestamp()) + 1 - time.time()))


def _invalid_refresh() -> AuthError:
    return AuthError(AuthErrorCode.INVALID_REFRESH_TOKEN, "The refresh token is not valid.")


@dataclass
class AuthHandlers:
    users: UserRepository
    refresh_tokens: RefreshTokenStore
    hasher: PasswordHasher
    issuer: TokenIssuer
    google: GoogleVerifier
    throttle: LoginThrottle
    signups: SignupThrottle
    events: EventPublisher
    refresh_token_ttl_s: int
    revocations: Revocations
    deleted_accounts: DeletedAccounts

    # --- accounts -------------------------------------------------------------------------

    async def register(self, request: Register) -> TokenPair:
        email = normalise_email(request.email)
        check_password_policy(request.password, email=email)
        await self.signups.admit(request.client.address)  # before any hashing
        user = UserRecord(
            id=uuid.uuid4().hex,
            email=email,
            created_at=utcnow(),
            providers=[Provider.PASSWORD],
            display_name=request.display_name,
            password_hash=await self.hasher.hash(request.password),
        )
        await self._create_account(user)
        await self._announce(
            UserRegistered(
                user_id=user.id, provider=Provider.PASSWORD, correlation_id=request.correlation_id
            )
        )
        return await self._start_session(user, request.correlation_id, created=True)

    async def login_password(self, request: LoginWithPassword) -> TokenPair:
        email = normalise_email(request.email)
        # Counted before the password is checked, so concurrent guesses all count; a
        # refused attempt costs no hashing. A failure below keeps its count.
        attempt = await self.throttle.admit(email, request.client.address)
        await asyncio.sleep(attempt.delay_s)  # the email's slow-down, if it is under attack
        user = await self.users.find_by_email(email)
        if user is None or user.password_hash is None:
            await self.hasher.verify_unknown(request.password)
            ok = False
        else:
            ok = await self.hasher.verify(user.password_hash, request.password)
        if not ok:
            raise InvalidCredentials()
        await self.throttle.succeeded(attempt)
        if self.hasher.needs_rehash(user.password_hash):
            old_hash, new_hash = user.password_hash, await self.hasher.hash(request.password)
            await self.users.update(user.id, lambda u: replace(u, password_hash=new_hash)
                                    if u.password_hash == old_hash else None)
        return await self._start_session(user, request.correlation_id)

    async def login_google(self, request: LoginWithGoogle) -> TokenPair:
        identity = await self.google.verify(request.id_token)
        user = await self.users.find_by_google(identity.sub)
        created = False
        if user is None:
            user, created = await self._link_or_create_google_user(
                identity, request.client.address
            )
            if created:
                await self._announce(
                    UserRegistered(
                        user_id=user.id,
                        provider=Provider.GOOGLE,
                        correlation_id=request.correlation_id,
                    )
                )
        return await self._start_session(user, request.correlation_id, created=created)

    async def get_user(self, request: GetUser) -> UserReply:
        user = await self.users.get(request.user_id)
        if user is None:
            raise AuthError(AuthErrorCode.NOT_FOUND, "No such user.")
        return UserReply(user=user.public(), correlation_id=request.correlation_id)

    async def delete_account(self, request: DeleteAccount | DeleteAccountV1) -> Done:
        if isinstance(request, DeleteAccountV1):
            raise RetiredRequest(request.type, "send auth.delete_account.v2, which carries the "
                                               "caller's access token")
        # Only with a live access token of the account: checked here, whoever put the
        # request on the subject.
        issued_at = self._issued_to(request.access_token, request.user_id)
        # Retry-safe order: hide the account (indexes), end its sessions, announce, then
        # drop the record. A crash before the revocation leaves a record that a retried
        # call (with the same, still valid token) finds again.
        user = await self.users.get_record(request.user_id)
        if user is None:
            raise AuthError(AuthErrorCode.NOT_FOUND, "No such user.")
        await self._refuse_if_revoked(issued_at, user)
        if user.google_sub:
            await self.users.release_google(user.google_sub, user.id)
        await self.users.release_email(user.email, user.id)
        # Before the announcement: once the services erase the user's data, no gateway
        # accepts another request of theirs (every gateway refuses their tokens from now),
        # and no worker runs or records a job of theirs, however late its command comes.
        now = utcnow()
        await self.deleted_accounts.mark(user.id, now)
        await self.revocations.revoke(user.id, now)
        await self.events.publish(
            AccountDeleted(user_id=user.id, correlation_id=request.correlation_id)
        )
        # Refresh tokens die with the account (refreshing checks that it exists), and their
        # records go too, before the record: a failure here leaves the record for a
        # retried call to find, and erase again.
        await self.refresh_tokens.erase_user(user.id)
        await self.users.delete_record(user.id)
        return Done(correlation_id=request.correlation_id)

    async def change_password(self, request: ChangePassword) -> TokenPair:
        """New password, every session ended (as "sign out everywhere"), and a new session
        for the caller, so the device that changed it stays signed in."""
        issued_at = self._issued_to(request.access_token, request.user_id)
        user = await self.users.get(request.user_id)
        if user is None:
            raise AuthError(AuthErrorCode.NOT_FOUND, "No such user.")
        await self._refuse_if_revoked(issued_at, user)
        if user.password_hash is None:
            raise NoPassword()
        # The new password's rules first: refusing it costs no hashing and no attempt.
        check_password_policy(request.new_password, email=user.email)
        if request.new_password == request.current_password:
            raise WeakPassword("Choose a password different from the current one.")
        # Throttled as a sign-in of this email from this network: a stolen access token
        # must not become an unlimited password oracle.
        attempt = await self.throttle.admit(user.email, request.client.address)
        await asyncio.sleep(attempt.delay_s)
        if not await self.hasher.verify(user.password_hash, request.current_password):
            raise WrongPassword()
        await self.throttle.succeeded(attempt)
        old_hash, new_hash = user.password_hash, await self.hasher.hash(request.new_password)
        # Sessions end before the password changes: a failure in between leaves everyone
        # signed out with the old password, never the old sessions alive with the new one.
        revoked_at = await self.revocations.revoke(user.id, utcnow())

        def changed(current: UserRecord) -> UserRecord | None:
            if current.password_hash != old_hash:
                return None  # changed concurrently: ours was checked against another
            signed_out = max(revoked_at, current.signed_out_at or revoked_at)
            return replace(current, password_hash=new_hash, signed_out_at=signed_out)

        stored = await self.users.update(user.id, changed)
        if stored is None:
            raise AuthError(AuthErrorCode.NOT_FOUND, "No such user.")
        if stored.password_hash != new_hash:
            raise WrongPassword()
        await _after_second_of(revoked_at)
        return await self._start_session(stored, request.correlation_id)

    # --- tokens ---------------------------------------------------------------------------

    async def refresh(self, request: RefreshTokens) -> TokenPair:
        token_hash = hash_refresh_token(request.refresh_token)
        found = await self.refresh_tokens.get_token(token_hash)
        if found is None:
            raise _invalid_refresh()
        token, revision = found
        family_found = await self.refresh_tokens.get_family(token.family_id)
        if family_found is None or family_found[0].revoked:
            raise _invalid_refresh()
        family, family_revision = family_found
        if token.used:
            raise await self._reused(token)
        if token.expires_at <= time.time():
            raise _invalid_refresh()
        if not await self.refresh_tokens.mark_used(token_hash, token, revision):
            if await self.refresh_tokens.get_token(token_hash) is None:
                raise _invalid_refresh()  # erased meanwhile (its account deleted): no theft
            raise await self._reused(token)  # lost a race with another use of the same token
        user = await self.users.get(token.user_id)
        if user is None:
            raise _invalid_refresh()
        if await self._signed_out_everywhere_since(token, user):
            await self.refresh_tokens.revoke_family(token.family_id, token.user_id)
            raise _invalid_refresh()
        if not await self.refresh_tokens.touch_family(token.family_id, family, family_revision):
            raise _invalid_refresh()  # revoked while we were rotating
        return await self._issue_pair(user, token.family_id, request.correlation_id,
                                      refused=_invalid_refresh())

    async def logout(self, request: Logout | LogoutV1) -> Done:
        if isinstance(request, LogoutV1) and request.everywhere:
            raise RetiredRequest(f"{request.type} with everywhere", "send auth.logout.v2, "
                                 "which carries the caller's access token")
        found = await self.refresh_tokens.get_token(hash_refresh_token(request.refresh_token))
        if found is None:
            raise _invalid_refresh()
        token, _ = found
        if isinstance(request, Logout) and request.everywhere:
            await self._sign_out_everywhere(token, request.access_token)
        await self.refresh_tokens.revoke_family(token.family_id, token.user_id)
        return Done(correlation_id=request.correlation_id)

    async def signing_keys(self, request: GetSigningKeys) -> SigningKeys:
        return SigningKeys(
            issuer=self.issuer.issuer,
            audience=self.issuer.audience,
            keys=self.issuer.jwks(),
            correlation_id=request.correlation_id,
        )

    # --- steps ----------------------------------------------------------------------------

    async def _sign_out_everywhere(self, token: RefreshTokenEntry,
                                   access_token: str | None) -> None:
        """Refuse every access token of the user issued until now, on every gateway, and
        every refresh token issued until now (see `_signed_out_everywhere_since`).

        Only a live session may do this (a spent or expired refresh token may not), and
        only with a live access token of the same user."""
        issued_at = self._issued_to(access_token, token.user_id)
        if token.used or token.expires_at <= time.time():
            raise _invalid_refresh()
        family = await self.refresh_tokens.get_family(token.family_id)
        if family is None or family[0].revoked:
            raise _invalid_refresh()
        user = await self.users.get(token.user_id)
        if user is None:
            raise _invalid_refresh()
        await self._refuse_if_revoked(issued_at, user)
        revoked_at = await self.revocations.revoke(token.user_id, utcnow())
        # Revision-checked: never writes back a record deleted meanwhile, and a concurrent
        # write (a rehash, a Google link) cannot drop the time.
        await self.users.update(token.user_id, lambda u: replace(u, signed_out_at=revoked_at)
                                if u.signed_out_at is None or u.signed_out_at < revoked_at
                                else None)
        await _after_second_of(revoked_at)

    def _issued_to(self, access_token: str | None, user_id: str) -> float:
        """When `access_token` was issued (`iat`), if it is one of ours (signature with the
        current or a previous key, issuer, audience, expiry) for `user_id`;
        `InvalidAccessToken` otherwise."""
        if not access_token:
            raise InvalidAccessToken("This request needs the caller's access token.")
        claims = self.issuer.verify(access_token, leeway_s=ACCESS_TOKEN_LEEWAY_S)
        if claims["sub"] != user_id:
            raise InvalidAccessToken("The access token is not this account's.")
        return float(claims["iat"])

    async def _refuse_if_revoked(self, issued_at: float, user: UserRecord) -> None:
        """As every gateway refuses it: a token issued at or before its user's sessions were
        ended (the account deleted, a sign-out everywhere) acts for nobody."""
        if await self._sessions_ended_since(issued_at, user):
            raise InvalidAccessToken("The access token has been revoked.")

    async def _signed_out_everywhere_since(self, token: RefreshTokenEntry,
                                           user: UserRecord) -> bool:
        """The refresh token was issued before its user signed out everywhere. Families
        are not listed per user, so they end here, at their next use, however long after."""
        return await self._sessions_ended_since(
            token.expires_at - self.refresh_token_ttl_s, user)

    async def _sessions_ended_since(self, issued_at: float, user: UserRecord) -> bool:
        """Whether the user's sessions were ended at or after `issued_at`: by the time on
        the account, or by the revocation list, which also holds sign-outs recorded before
        the account kept its own."""
        listed = await self.revocations.revoked_at(user.id)
        return is_revoked(issued_at, user.signed_out_at) or is_revoked(issued_at, listed)

    async def _create_account(self, user: UserRecord) -> None:
        """Record first, then the email index: the index is the commit point."""
        await self.users.save(user)
        if not await self.users.claim_email(user.email, user.id):
            await self.users.delete_record(user.id)
            raise AuthError(AuthErrorCode.EMAIL_TAKEN, "An account with this email exists.")

    async def _link_or_create_google_user(
        self, identity: GoogleIdentity, address: str | None
    ) -> tuple[UserRecord, bool]:
        email = normalise_email(identity.email)
        for _ in range(3):  # a concurrent sign-up may take the email between our steps
            existing = await self.users.find_by_email(email)
            if existing is not None:
                linked = await self.users.update(existing.id,
                                                 lambda u: u.linked_to_google(identity.sub))
                if linked is None:
                    continue  # deleted meanwhile: the email may be free again
                await self.users.claim_google(identity.sub, existing.id)
                return linked, False
            user = UserRecord(
                id=uuid.uuid4().hex,
                email=email,
                created_at=utcnow(),
                providers=[Provider.GOOGLE],
                display_name=identity.name,
                google_sub=identity.sub,
            )
            await self.signups.admit(address)  # a new account, like a sign-up
            try:
                await self._create_account(user)
            except AuthError as exc:
                if exc.code is AuthErrorCode.EMAIL_TAKEN:
                    continue
                raise
            await self.users.claim_google(identity.sub, user.id)
            return user, True
        raise AuthError(AuthErrorCode.UNAVAILABLE, "Could not create the account; retry.")

    async def _start_session(
        self, user: UserRecord, correlation_id: str, *, created: bool = False
    ) -> TokenPair:
        family_id = uuid.uuid4().hex
        await self.refresh_tokens.add_family(family_id, TokenFamily(user_id=user.id))
        return await self._issue_pair(user, family_id, correlation_id, created=created,
                                      refused=InvalidCredentials())

    async def _issue_pair(
        self, user: UserRecord, family_id: str, correlation_id: str, *, refused: AuthError,
        created: bool = False,
    ) -> TokenPair:
        refresh_token = secrets.token_urlsafe(32)
        token_hash = hash_refresh_token(refresh_token)
        await self.refresh_tokens.add_token(
            token_hash,
            RefreshTokenEntry(
                user_id=user.id,
                family_id=family_id,
                expires_at=time.time() + self.refresh_token_ttl_s,
            ),
        )
        # The account may have been deleted since it was read, and its tokens scanned
        # before these writes landed. A deletion marks the account before that scan, so
        # a mark seen now means ours may have escaped it: take them back.
        if await self.deleted_accounts.is_deleted(user.id):
            await self.refresh_tokens.forget(family_id, token_hash)
            raise refused
        access = self.issuer.issue(user_id=user.id, email=user.email)
        return TokenPair(
            user=user.public(),
            access_token=access.token,
            refresh_token=refresh_token,
            expires_in=access.expires_in,
            refresh_expires_in=self.refresh_token_ttl_s,
            created=created,
            correlation_id=correlation_id,
        )

    async def _reused(self, token: RefreshTokenEntry) -> AuthError:
        """A spent token came back: someone holds a copy, so the whole family ends."""
        await self.refresh_tokens.revoke_family(token.family_id, token.user_id)
        log.warning("refresh token reused; family revoked", extra={"user_id": token.user_id})
        return AuthError(
            AuthErrorCode.REFRESH_TOKEN_REUSED,
            "This refresh token was already used; the session has been ended.",
        )

    async def _announce(self, event: Event) -> None:
        """The account exists whatever happens here; a lost event is logged, not fatal."""
        try:
            await self.events.publish(event)
        except Exception:
            log.exception("could not publish event", extra={"type": event.type})
