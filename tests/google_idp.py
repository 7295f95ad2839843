"""A stand-in for Google's sign-in keys: an RSA key the test generates, its JWKS served
over HTTP on loopback, and ID tokens minted with it. No network, no mock of google-auth:
the service fetches and checks these keys exactly as it would Google's."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

GOOGLE_ISSUER = "https://accounts.google.com"


@dataclass
class GoogleKeys:
    kid: str = "test-google-key-1"
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    server: ThreadingHTTPServer | None = None
    fetches: int = 0

    def jwks(self) -> dict:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    @property
    def certs_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/oauth2/v3/certs"

    def mint(
        self,
        *,
        sub: str,
        email: str,
        aud: str = "terra-web.apps.example",
        email_verified: bool = True,
        issuer: str = GOOGLE_ISSUER,
        expires_in: int = 3600,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": aud,
            "sub": sub,
            "email": email,
            "email_verified": email_verified,
            "iat": now,
            "exp": now + expires_in,
            "name": "Test User",
        }
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})

    def serve(self) -> GoogleKeys:
        keys = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                keys.fetches += 1
                body = json.dumps(keys.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
