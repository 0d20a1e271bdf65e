"""The SSO's signing keys: RS256 (kid ``JWT-Signature-Key``, as EVE) and ES256.

Key generation takes a moment (RSA); tests make one :class:`SigningKeys` and pass it to
every :class:`~killsim.server.SimServer` they start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

RS256_KID = "JWT-Signature-Key"
ES256_KID = "JWT-Signature-Key-ES256"


@dataclass(frozen=True)
class SigningKeys:
    """A key pair per algorithm, with the kid each is published under."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> SigningKeys:
        """Fresh keys (RSA 2048, EC P-256)."""
        return cls(
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            ec.generate_private_key(ec.SECP256R1()),
        )

    def jwks(self) -> dict[str, Any]:
        """The public keys as the SSO's ``/oauth/jwks`` document."""
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec_key.public_key()))
        rsa_jwk.update({"alg": "RS256", "kid": RS256_KID, "use": "sig"})
        ec_jwk.update({"alg": "ES256", "kid": ES256_KID, "use": "sig"})
        # EVE's document carries this flag too; clients must ignore what they don't know.
        return {"keys": [rsa_jwk, ec_jwk], "SkipUnresolvedJsonWebKeys": True}

    def sign(self, claims: dict[str, Any], alg: str) -> str:
        """A compact JWT signed with the key of ``alg`` (kid in the header)."""
        kid = RS256_KID if alg == "RS256" else ES256_KID
        key = self.rsa_key if alg == "RS256" else self.ec_key
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token signed by one of these keys (expiry not checked here).

        Raises :class:`jwt.InvalidTokenError` on a bad token or unknown kid.
        """
        header = jwt.get_unverified_header(token)
        kid, alg = header.get("kid"), header.get("alg")
        if kid == RS256_KID and alg == "RS256":
            key: Any = self.rsa_key.public_key()
        elif kid == ES256_KID and alg == "ES256":
            key = self.ec_key.public_key()
        else:
            raise jwt.InvalidTokenError(f"unknown kid/alg {kid!r}/{alg!r}")
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            options={
                "verify_exp": False,
                "verify_aud": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
        return claims
