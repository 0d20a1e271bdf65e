"""EVE SSO v2 over HTTP, mounted under ``/sso``.

Routes: ``/.well-known/oauth-authorization-server``, ``/oauth/jwks``,
``/v2/oauth/authorize`` (auto-approves the login character), ``/v2/oauth/token``
(refresh and PKCE authorization-code grants, form bodies only) and ``/v2/oauth/revoke``.
Confidential apps authenticate with HTTP Basic; a PKCE app (no secret) sends
``client_id`` in the body. The token request's ``redirect_uri`` is optional (EVE's
PKCE flow does not send it) but must match the authorization's when present.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from killsim.faults import Faults
from killsim.http import Request, Response
from killsim.keys import SigningKeys
from killsim.sso_state import Grant, OAuthError, SsoState

PREFIX = "/sso"
FORM = "application/x-www-form-urlencoded"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _oauth_error(error: OAuthError) -> Response:
    response = Response.json(
        error.status, {"error": error.code, "error_description": error.description}
    )
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="EVE SSO"'
    return response


class SsoApp:
    """Answers every request under ``/sso``."""

    def __init__(self, state: SsoState, keys: SigningKeys, faults: Faults, base_url: str) -> None:
        self.state = state
        self._keys = keys
        self._faults = faults
        self._base = base_url.rstrip("/") + PREFIX
        self._routes: Mapping[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "/.well-known/oauth-authorization-server"): self._metadata,
            ("GET", "/oauth/jwks"): self._jwks,
            ("GET", "/v2/oauth/authorize"): self._authorize,
            ("POST", "/v2/oauth/token"): self._token,
            ("POST", "/v2/oauth/revoke"): self._revoke,
        }

    def route_template(self, request: Request) -> str:
        """The route a request is counted under in statistics."""
        path = request.path[len(PREFIX) :].rstrip("/") or "/"
        known = {p for _, p in self._routes}
        return PREFIX + (path if path in known else "/{unknown}")

    def __call__(self, request: Request) -> Response:
        path = request.path[len(PREFIX) :].rstrip("/") or "/"
        handler = self._routes.get((request.method, path))
        if handler is None:
            if any(p == path for _, p in self._routes):
                return Response.error(405, "Method not allowed")
            return Response.error(404, "Not found")
        try:
            return handler(request)
        except OAuthError as exc:
            return _oauth_error(exc)

    # -- documents ------------------------------------------------------------------------

    def _metadata(self, request: Request) -> Response:
        base = self._base
        return Response.json(
            200,
            {
                "issuer": self.state.issuer,
                "authorization_endpoint": f"{base}/v2/oauth/authorize",
                "token_endpoint": f"{base}/v2/oauth/token",
                "jwks_uri": f"{base}/oauth/jwks",
                "revocation_endpoint": f"{base}/v2/oauth/revoke",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
                "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
                "scopes_supported": list(self.state.scenario.app_scopes),
            },
        )

    def _jwks(self, request: Request) -> Response:
        failure = self._faults.jwks_failure()
        if failure is not None:
            return Response(
                failure, b"Service Unavailable", {"Content-Type": "text/plain; charset=utf-8"}
            )
        return Response.json(200, self._keys.jwks(), {"Cache-Control": "public, max-age=300"})

    # -- the authorization endpoint ---------------------------------------------------

    def _redirect_ok(self, uri: str) -> bool:
        if self.state.scenario.callback_url is not None:
            return uri == self.state.scenario.callback_url
        parts = urlsplit(uri)
        return parts.scheme in ("http", "https") and parts.hostname in _LOOPBACK

    def _authorize(self, request: Request) -> Response:
        client_id = request.param("client_id")
        redirect_uri = request.param("redirect_uri") or ""
        if client_id != self.state.client_id:
            return Response.error(400, "Unknown client_id")
        if not self._redirect_ok(redirect_uri):
            return Response.error(400, "redirect_uri does not match the application's callback")
        state = request.param("state")
        try:
            code = self._approve(request, client_id, redirect_uri, state)
        except OAuthError as exc:
            return _redirect(
                redirect_uri,
                {"error": exc.code, "error_description": exc.description, "state": state or ""},
            )
        return _redirect(redirect_uri, {"code": code, "state": state or ""})

    def _approve(
        self, request: Request, client_id: str, redirect_uri: str, state: str | None
    ) -> str:
        if request.param("response_type") != "code":
            raise OAuthError("unsupported_response_type", "response_type must be code")
        if not state:
            raise OAuthError("invalid_request", "state is required")
        challenge = request.param("code_challenge")
        method = request.param("code_challenge_method")
        if challenge is not None and method != "S256":
            raise OAuthError("invalid_request", "code_challenge_method must be S256")
        if challenge is None and self.state.client_secret is None:
            raise OAuthError("invalid_request", "PKCE (code_challenge, S256) is required")
        scopes = tuple((request.param("scope") or "").split())
        unknown = [s for s in scopes if s not in self.state.scenario.app_scopes]
        if unknown:
            raise OAuthError("invalid_scope", f"scope not registered: {' '.join(unknown)}")
        character_id = self.state.login_character
        if character_id is None:
            raise OAuthError("access_denied", "The user cancelled the login")
        return self.state.new_code(Grant(character_id, client_id, scopes), redirect_uri, challenge)

    # -- the token and revocation endpoints ---------------------------------------------

    def _form(self, request: Request) -> dict[str, str]:
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != FORM:
            raise OAuthError("invalid_request", f"Content-Type must be {FORM}")
        try:
            parsed = parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError as exc:
            raise OAuthError("invalid_request", "body is not UTF-8") from exc
        return {key: values[0] for key, values in parsed.items()}

    def _client(self, request: Request, form: Mapping[str, str]) -> str:
        """The authenticated client id; 401 ``invalid_client`` otherwise."""
        auth = request.header("authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise OAuthError("invalid_client", "Malformed Basic credentials", 401) from exc
            client_id, _, secret = raw.partition(":")
            expected = self.state.client_secret
            secret_ok = expected is not None and unquote(secret) == expected
            if unquote(client_id) == self.state.client_id and secret_ok:
                return self.state.client_id
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        if "client_secret" in form:
            raise OAuthError("invalid_client", "Send the client secret with HTTP Basic", 401)
        if form.get("client_id") == self.state.client_id and self.state.client_secret is None:
            return self.state.client_id
        raise OAuthError("invalid_client", "Client authentication failed", 401)

    def _token(self, request: Request) -> Response:
        failure = self._faults.sso_failure()
        if failure is not None:
            text = self._faults.error_text("The SSO is unavailable")
            return Response.json(failure, {"error": "server_error", "error_description": text})
        form = self._form(request)
        client_id = self._client(request, form)
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            tokens = self.state.refresh(
                form.get("refresh_token", ""),
                client_id,
                form.get("scope"),
                withheld=self._faults.withheld_scopes,
            )
        elif grant_type == "authorization_code":
            tokens = self.state.exchange_code(
                form.get("code", ""), client_id, form.get("redirect_uri"), form.get("code_verifier")
            )
        else:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} not supported")
        return Response.json(200, tokens.to_json(), {"Cache-Control": "no-store"})

    def _revoke(self, request: Request) -> Response:
        form = self._form(request)
        client_id = self._client(request, form)
        self.state.revoke_token(form.get("token", ""), client_id)
        return Response(200)


def _redirect(uri: str, params: dict[str, str]) -> Response:
    separator = "&" if urlsplit(uri).query else "?"
    return Response(302, b"", {"Location": f"{uri}{separator}{urlencode(params)}"})
