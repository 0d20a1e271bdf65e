"""EVE SSO: token refresh and validation, the PKCE browser login, tokens encrypted at rest.

Build one :class:`SsoClient` per process; it caches the server metadata and signing keys::

    sso = SsoClient(settings.sso_base_url, settings.client_id, settings.client_secret)
    tokens = sso.refresh(stored_refresh_token)   # store tokens.refresh_token: it may rotate

Errors: ``SsoError`` (unreachable, nonsense), ``TokenRejected`` (bad JWT) and
``NeedsLogin`` (the grant is gone) from :mod:`killcli.errors`; ``ConfigError`` and
``InputError`` from :class:`TokenCipher` for unusable keys or undecryptable tokens.
"""

from __future__ import annotations

from killcli.sso.client import NEEDS_LOGIN_ERRORS, SsoClient
from killcli.sso.crypto import TokenCipher, generate_key
from killcli.sso.login import run_login
from killcli.sso.models import ServerMetadata, TokenClaims, TokenSet
from killcli.sso.pkce import challenge_of, make_pkce
from killcli.sso.tokens import EVE_AUDIENCE, normalize_issuer

__all__ = [
    "EVE_AUDIENCE",
    "NEEDS_LOGIN_ERRORS",
    "ServerMetadata",
    "SsoClient",
    "TokenCipher",
    "TokenClaims",
    "TokenSet",
    "challenge_of",
    "generate_key",
    "make_pkce",
    "normalize_issuer",
    "run_login",
]
