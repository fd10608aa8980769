"""A token issuer for benchmarks: an RSA key, its JWKS and RFC 8414 metadata served on
127.0.0.1 from a thread, and access tokens signed with that key (``sign``). Enough for
mq9-mcp's resource server to check tokens (``--oauth-issuer``); no login, registration or
consent: the suite's OAuth tests run a real authorization server (tests/mcp/oauth/) instead.
Stopped by whoever started it."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

KID = "bench"


class Issuer:
    """Serves ``/.well-known/oauth-authorization-server`` and ``/jwks`` at ``url``."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self._jwks = json.dumps({"keys": [{**public, "kid": KID, "alg": "RS256", "use": "sig"}]})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> Issuer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sign(self, resource: str, **claims: Any) -> str:
        """An RFC 9068 access token for ``resource`` (its audience), ``claims`` added."""
        now = int(time.time())
        body = {"iss": self.url, "aud": resource, "scope": "mq9:admin", "iat": now,
                "exp": now + 3600, **claims}  # fmt: skip
        return jwt.encode(body, self.key, algorithm="RS256", headers={"typ": "at+jwt", "kid": KID})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/oauth-authorization-server":
                    body = json.dumps({"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"})
                elif self.path == "/jwks":
                    body = issuer._jwks
                else:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:  # quiet
                pass

        return Handler
