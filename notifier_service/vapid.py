"""The VAPID key (RFC 8292) that signs every Web Push request: the operator's in
production, generated once and kept under the data dir locally."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

from notifier_service.config import NotifierSettings
from terra.errors import ConfigurationError
from terra.settings import Profile

# Push services refuse a JWT that expires more than 24 hours ahead.
CLAIMS_LIFETIME_S = 12 * 3600


def load_vapid(settings: NotifierSettings) -> Vapid:
    """TERRA_VAPID_PRIVATE_KEY when set; else the key in `settings.vapid_file()`, which
    the local profile makes on first use. A browser's subscription is bound to the public
    key, so a key that changed would silently orphan every subscription: it is kept,
    never remade."""
    if settings.vapid_private_key is not None:
        return _from_pem(settings.vapid_private_key.get_secret_value().encode(),
                         "TERRA_VAPID_PRIVATE_KEY")
    path = settings.vapid_file()
    if path.exists():
        return _from_pem(path.read_bytes(), str(path))
    if settings.profile is not Profile.LOCAL:
        raise ConfigurationError(f"no VAPID key: set TERRA_VAPID_PRIVATE_KEY, or put a PEM "
                                 f"P-256 key in {path} (`vapid --gen` makes one)")
    return _generate(path)


def _from_pem(pem: bytes, source: str) -> Vapid:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{source} is not a PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigurationError(f"{source} is not a P-256 (prime256v1) key")
    return Vapid(key)


def _generate(path: Path) -> Vapid:
    vapid = Vapid()
    vapid.generate_keys()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 (never readable by others, even for an instant) and only if absent: a
    # second notifier starting at once keeps the first one's key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _from_pem(path.read_bytes(), str(path))
    with os.fdopen(fd, "wb") as out:
        out.write(vapid.private_pem())
    return vapid


def public_key_b64url(vapid: Vapid) -> str:
    """The `applicationServerKey` a browser subscribes with: base64url (no padding) of the
    uncompressed P-256 point."""
    point = vapid.public_key.public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode()


def claims(endpoint: str, subject: str, now: float | None = None) -> dict:
    """The JWT claims for a request to `endpoint`: its push service's origin, an expiry
    within the day, the operator's contact."""
    parts = urlsplit(endpoint)
    origin = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    return {"aud": origin, "exp": int((now or time.time()) + CLAIMS_LIFETIME_S),
            "sub": subject}


def authorization(vapid: Vapid, endpoint: str, subject: str) -> str:
    """The `Authorization: vapid t=<jwt>, k=<public key>` header for `endpoint`."""
    return vapid.sign(claims(endpoint, subject))["Authorization"]
