#!/usr/bin/env python3
"""Verifies a boxoffice ticket code offline, as a door scanner that is not
boxoffice would: with the JWK Set of GET /v1/tickets/keys and the Python
`cryptography` package, nothing of boxoffice's.

    verify_ticket_code.py CODE < keys.json

Reads the JWK Set on standard input. Prints the code's claims as JSON and
exits 0 when the code is a compact JWS (alg EdDSA) signed by the key its
header's `kid` names, and that `kid` is the key's RFC 7638 thumbprint;
prints why not and exits 1 otherwise.
"""

import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk: dict) -> str:
    """RFC 7638: the SHA-256 of the required members, sorted, no spaces."""
    members = {name: jwk[name] for name in ("crv", "kty", "x")}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


def verify(code: str, key_set: dict) -> dict:
    parts = code.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS (three dot-separated parts)")
    header = json.loads(b64url_decode(parts[0]))
    if header.get("alg") != "EdDSA":
        raise ValueError(f"alg is {header.get('alg')!r}, not EdDSA")
    kid = header.get("kid")
    keys = [k for k in key_set.get("keys", []) if k.get("kid") == kid]
    if not keys:
        raise ValueError(f"no key with kid {kid!r} in the key set")
    jwk = keys[0]
    if (jwk.get("kty"), jwk.get("crv")) != ("OKP", "Ed25519"):
        raise ValueError(f"key {kid} is not an OKP/Ed25519 key")
    if thumbprint(jwk) != kid:
        raise ValueError(f"kid {kid} is not the key's RFC 7638 thumbprint")
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    signed = f"{parts[0]}.{parts[1]}".encode()
    try:
        public.verify(b64url_decode(parts[2]), signed)
    except InvalidSignature:
        raise ValueError("the signature does not verify") from None
    return json.loads(b64url_decode(parts[1]))


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        claims = verify(sys.argv[1], json.load(sys.stdin))
    except (ValueError, KeyError) as err:
        print(f"refused: {err}")
        return 1
    print(json.dumps(claims, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
