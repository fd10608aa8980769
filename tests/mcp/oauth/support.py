"""A real authorization server for the OAuth tests (issue #112): panva's ``oidc-provider``
(npm, OpenID Certified) run by node on loopback (``authorization_server.mjs``), installed once
into ``~/.cache/langchain-mq9/oidc-provider-<version>`` (``$XDG_CACHE_HOME`` if set), as the
JS SDK tests cache theirs. Its signing keys are made here (``signing_key``), so a test can
also sign what the AS never would (another issuer, an expired token) with the AS's own key,
and the tokens mq9-mcp refuses are refused for the reason named, not for an unknown key."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2 as httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from testbed.ports import unclaimed_port
from testbed.support.waiting import until_sync

VERSION = "9.13.3"
SERVER = Path(__file__).with_name("authorization_server.mjs")
INSTALL_TIMEOUT = 180


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "langchain-mq9" / f"oidc-provider-{VERSION}"


def installed() -> Path:
    """The ``node_modules`` folder holding oidc-provider; the test is skipped in one line
    where node or npm is missing."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: the OAuth tests run oidc-provider on node")
    home = cache_dir()
    modules = home / "node_modules"
    if (modules / "oidc-provider" / "package.json").exists():
        return modules
    home.mkdir(parents=True, exist_ok=True)
    (home / "package.json").write_text('{"name": "mq9-oauth-tests", "private": true}')
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", f"oidc-provider@{VERSION}"],
        cwd=home, check=True, timeout=INSTALL_TIMEOUT, capture_output=True,
    )  # fmt: skip
    return modules


def signing_key(kid: str) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    """An RSA key and its private JWK (the AS's ``jwks``)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    return key, {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


class AuthorizationServer:
    """oidc-provider on 127.0.0.1, its issuer ``url``; ``restart`` (key rotation) keeps the
    port."""

    def __init__(
        self, resource: str, clients: list[dict[str, Any]], ttl: int = 300,
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.resource, self.clients, self.ttl = resource, clients, ttl
        self.env = env or {}
        self.port = unclaimed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key, self.jwk = signing_key("k1")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> AuthorizationServer:
        env = {
            **os.environ, "PORT": str(self.port), "RESOURCE": self.resource,
            "JWKS": json.dumps({"keys": [self.jwk]}), "CLIENTS": json.dumps(self.clients),
            "TTL": str(self.ttl), **self.env,
        }  # fmt: skip
        # run beside its node_modules: an ES module finds packages from where it lies
        script = installed().parent / SERVER.name
        shutil.copyfile(SERVER, script)
        self.process = subprocess.Popen(
            ["node", str(script)], env=env, cwd=script.parent,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

        def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"oidc-provider exited: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            return httpx.get(f"{self.url}/.well-known/openid-configuration").status_code == 200

        until_sync(answers, timeout=30, what="oidc-provider answering", every=0.1,
                   ignoring=(httpx.HTTPError,))  # fmt: skip
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process.stderr.close()  # type: ignore[union-attr]
            self.process = None

    def rotate(self, kid: str) -> None:
        """A new signing key (the old one gone from its JWKS), the same issuer and port."""
        self.stop()
        self.key, self.jwk = signing_key(kid)
        self.start()

    def token(self, client_id: str, secret: str, scope: str, resource: str | None = None) -> str:
        """An access token by the client credentials grant (RFC 6749 4.4) for ``resource``."""
        form = {"grant_type": "client_credentials", "scope": scope,
                "resource": resource or self.resource}  # fmt: skip
        answer = httpx.post(f"{self.url}/token", data=form, auth=(client_id, secret))
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def forge(self, **changes: Any) -> str:
        """A JWT access token signed with the AS's own key, its claims changed by ``changes``
        (a value None drops the claim), ``headers``/``key``/``algorithm`` as given."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url, "sub": "mallory", "aud": self.resource, "client_id": "mallory",
            "scope": "mq9:admin", "iat": now, "exp": now + 300, "jti": str(now),
        }  # fmt: skip
        headers = {"typ": "at+jwt", "kid": self.jwk["kid"], **changes.pop("headers", {})}
        key = changes.pop("key", self.key)
        algorithm = changes.pop("algorithm", "RS256")
        claims.update(changes)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


@contextmanager
def running(resource: str, clients: list[dict[str, Any]]) -> Iterator[AuthorizationServer]:
    server = AuthorizationServer(resource, clients).start()
    try:
        yield server
    finally:
        server.stop()


def client(client_id: str, **extra: Any) -> dict[str, Any]:
    """A confidential client using the client credentials grant (secret: ``<id>-secret``)."""
    return {
        "client_id": client_id, "client_secret": f"{client_id}-secret",
        "grant_types": ["client_credentials"], "redirect_uris": [], "response_types": [],
        "scope": "mq9:read mq9:send mq9:call mq9:admin", **extra,
    }  # fmt: skip


class ClientMetadataDocuments:
    """Client ID Metadata Documents (MCP's preferred registration) served over HTTPS on
    127.0.0.1 from a thread: a client's ``client_id`` is the URL of its document, which the AS
    fetches. Its certificate is made here (``ca_file``: the AS's node trusts it by
    ``NODE_EXTRA_CA_CERTS``); ``fetched`` lists the paths asked for."""

    def __init__(self, folder: Path) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.fetched: list[str] = []
        self.ca_file = folder / "cimd-cert.pem"
        key_file = folder / "cimd-key.pem"
        self._certificate(key_file)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.origin = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def publish(self, path: str, metadata: dict[str, Any]) -> str:
        """Serve ``metadata`` at ``path``, its ``client_id`` the URL; the URL."""
        url = f"{self.origin}{path}"
        self.documents[path] = {**metadata, "client_id": url}
        return url

    def __enter__(self) -> ClientMetadataDocuments:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _certificate(self, key_file: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.UTC)
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        self.ca_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))  # fmt: skip

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        documents, fetched = self.documents, self.fetched

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fetched.append(self.path)
                document = documents.get(self.path)
                body = json.dumps(document).encode() if document is not None else b"{}"
                self.send_response(200 if document is not None else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:  # the test's output stays the test's
                pass

        return Handler
