"""Helpers for the TLS, authentication and front-door tests: a test CA made here (Python
`cryptography`), OAuth test tokens (ES256 JWTs and their JWKS), a SCRAM-SHA-256 client, and
PROXY protocol headers."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import ssl
import struct
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

# ----------------------------------------------------------------------------------------
# A test PKI


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TestPKI:
    """A CA and server certificates for localhost / 127.0.0.1, written under `directory`."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, ca_name: str = "popfleet test CA"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name(ca_name)).issuer_name(_name(ca_name))
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_path = self.dir / "ca.pem"
        self.ca_path.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        self.cert_path = self.dir / "cert.pem"
        self.key_path = self.dir / "key.pem"
        self.issue("localhost", self.cert_path, self.key_path)

    def issue(self, cn: str, cert_path: Path, key_path: Path, days: float = 1.0) -> x509.Certificate:
        """A server certificate for `cn`, localhost and 127.0.0.1 (chain: leaf + CA)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName(cn),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.ca_cert.public_bytes(
            serialization.Encoding.PEM)
        # Write the key first and rename both into place, as a Secret update would.
        tmp_key, tmp_cert = key_path.with_suffix(".tmp-key"), cert_path.with_suffix(".tmp-cert")
        tmp_key.write_bytes(_pem_key(key))
        tmp_cert.write_bytes(chain)
        os.replace(tmp_key, key_path)
        os.replace(tmp_cert, cert_path)
        return cert

    def client_context(self, **kw) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx

    def server_args(self) -> list[str]:
        return ["--tls-cert", str(self.cert_path), "--tls-key", str(self.key_path)]


def peer_cn(sock: ssl.SSLSocket) -> str:
    cert = sock.getpeercert()
    return dict(x[0] for x in cert["subject"])["commonName"]


# ----------------------------------------------------------------------------------------
# OAuth test tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """An ES256 signing key, its JWKS, and tokens."""

    __test__ = False

    def __init__(self, kid: str = "test-key-1", issuer: str = "https://idp.popfleet.test"):
        self.kid = kid
        self.issuer = issuer
        self.key = ec.generate_private_key(ec.SECP256R1())

    def jwk(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "use": "sig",
                "x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big"))}

    def token(self, email: str, lifetime: int = 300, **claims) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": "pop3", "email": email, "iat": now, "exp": now + lifetime}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        header = {"alg": "ES256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def write_jwks(path: Path, *issuers: TokenIssuer) -> None:
    path.write_text(json.dumps({"keys": [i.jwk() for i in issuers]}))


def oauthbearer_ir(user: str | None, token: str) -> str:
    a = f"a={user}" if user else ""
    raw = f"n,{a},\x01host=localhost\x01port=110\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode()).decode()


def xoauth2_ir(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


# ----------------------------------------------------------------------------------------
# SCRAM-SHA-256 (RFC 5802 / 7677), client side


class ScramClient:
    __test__ = False

    def __init__(self, user: str, password: str, nonce: str | None = None):
        self.user = user
        self.password = password
        self.nonce = nonce or b64url(os.urandom(18))
        self.bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={self.nonce}"
        self.server_signature: bytes | None = None

    def first(self) -> str:
        return base64.b64encode(f"n,,{self.bare}".encode()).decode()

    def final(self, challenge_b64: str, password: str | None = None) -> str:
        server_first = base64.b64decode(challenge_b64).decode()
        attrs = dict(a.split("=", 1) for a in server_first.split(","))
        assert attrs["r"].startswith(self.nonce), server_first
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        salted = hashlib.pbkdf2_hmac("sha256", (password or self.password).encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.server_signature = hmac.new(server_key, auth_message, "sha256").digest()
        return base64.b64encode(f"{without_proof},p={base64.b64encode(proof).decode()}".encode()).decode()

    def check_server_final(self, challenge_b64: str) -> bool:
        text = base64.b64decode(challenge_b64).decode()
        return text == "v=" + base64.b64encode(self.server_signature).decode()


# ----------------------------------------------------------------------------------------
# PROXY protocol headers


def proxy_v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2(src: str, dst: str, sport: int, dport: int, tls_version: str | None = None,
             local: bool = False) -> bytes:
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if local:
        return sig + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = 0x11 if s.version == 4 else 0x21
    payload = s.packed + d.packed + struct.pack("!HH", sport, dport)
    if tls_version:
        sub = bytes([0x21]) + struct.pack("!H", len(tls_version)) + tls_version.encode()
        ssl_value = bytes([0x01]) + struct.pack("!I", 0) + sub
        payload += bytes([0x20]) + struct.pack("!H", len(ssl_value)) + ssl_value
    return sig + bytes([0x21, fam]) + struct.pack("!H", len(payload)) + payload


def connect(port: int, source: str | None = None, timeout: float = 10) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_line(sock, limit: float = 10) -> bytes:
    """One line (with CRLF) from a plain or TLS socket, reading a byte at a time so nothing
    after it is consumed."""
    sock.settimeout(limit)
    out = bytearray()
    while not out.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            raise ConnectionError(f"closed after {bytes(out)!r}")
        out += b
    return bytes(out)


def recv_until(sock, marker: bytes, limit: float = 10) -> bytes:
    sock.settimeout(limit)
    out = bytearray()
    while not out.endswith(marker):
        b = sock.recv(1)
        if not b:
            raise ConnectionError(f"closed after {bytes(out)!r}")
        out += b
    return bytes(out)


def closed_without_reply(sock, limit: float = 10) -> bool:
    sock.settimeout(limit)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
