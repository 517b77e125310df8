"""A small OAuth 2.0 authorization server on loopback, over HTTPS with the suite's CA.

It speaks the parts of RFC 6749 / 7636 / 7009 / 7662 the app uses: the authorization
code grant with PKCE (S256), refresh tokens that rotate on every use, revocation and
introspection. It is a real server answering real HTTP, not a stub of the client code;
what it keeps is in memory, and `requests` records what it was asked.
"""

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.servers.certs import server_context
from tests.servers.dovecot import free_port


@dataclass
class Grant:
    user: str
    client_id: str
    scope: str
    nonce: str = ""


@dataclass
class State:
    clients: dict[str, str] = field(default_factory=dict)  # client id -> secret
    codes: dict[str, tuple[Grant, str, str]] = field(default_factory=dict)
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)
    access_tokens: dict[str, tuple[Grant, float]] = field(default_factory=dict)
    requests: list[tuple[str, dict]] = field(default_factory=list)
    lifetime: int = 3600
    issuer: str = ""
    # What the token endpoint says was granted, when a test wants it to differ from what
    # was asked (the user unticked a permission on the consent page).
    granted_scope: str | None = None
    # The ID token's email_verified claim: left out when None.
    email_verified: bool | None = None
    # Overrides the ID token's issuer (a token from someone else's sign-in service).
    forged_issuer: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _id_token(grant: Grant, secret: str, issuer: str, extra: dict | None = None) -> str:
    """An OpenID Connect ID token, signed HS256 with the client's secret."""

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"iss": issuer, "aud": grant.client_id, "sub": grant.user, "email": grant.user,
              "iat": int(time.time()), "exp": int(time.time()) + 600, **(extra or {})}  # fmt: skip
    if grant.nonce:
        claims["nonce"] = grant.nonce
    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


class _Handler(BaseHTTPRequestHandler):
    server_version = "test-oauth/1"

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: dict | None = None, headers: dict | None = None):
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        values = parse_qs(self.rfile.read(length).decode())
        return {key: items[0] for key, items in values.items()}

    def _client(self, form: dict) -> str | None:
        state: State = self.server.state
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        return client_id if state.clients.get(client_id) == secret else None

    def do_GET(self):
        # /authorize?response_type=code&client_id&redirect_uri&state&code_challenge&
        # code_challenge_method=S256&login_hint=<the user who "signs in">
        state: State = self.server.state
        url = urlsplit(self.path)
        query = {key: items[0] for key, items in parse_qs(url.query).items()}
        state.requests.append((url.path, query))
        discovery = "/v2.0/.well-known/openid-configuration"
        if url.path.endswith(discovery):
            # OpenID Connect discovery, as Microsoft's tenants answer it (msal asks).
            base = f"{self.server.base_url}{url.path.removesuffix(discovery)}"
            return self._reply(
                200,
                {"issuer": f"{base}/v2.0",
                 "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                 "token_endpoint": f"{base}/oauth2/v2.0/token"},
            )  # fmt: skip
        if not url.path.endswith("/authorize"):
            return self._reply(404)
        if (
            query.get("client_id") not in state.clients
            or query.get("code_challenge_method") != "S256"
        ):
            return self._reply(400, {"error": "invalid_request"})
        code = secrets.token_urlsafe(16)
        grant = Grant(
            query.get("login_hint", ""), query["client_id"], query.get("scope", ""),
            query.get("nonce", ""),
        )  # fmt: skip
        state.codes[code] = (grant, query["redirect_uri"], query["code_challenge"])
        target = (
            f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"
        )
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        state: State = self.server.state
        form = self._form()
        path = urlsplit(self.path).path
        state.requests.append((path, {k: v for k, v in form.items() if "secret" not in k}))
        if getattr(self.server, "introspection_only", False):
            # The resource server's (Dovecot's) own listener on loopback, plain HTTP.
            if path != "/introspect":
                return self._reply(404)
            with state.lock:
                return self._introspect(state, form)
        client_id = self._client(form)
        if client_id is None:
            return self._reply(401, {"error": "invalid_client"})
        with state.lock:
            if path.endswith("/token"):
                return self._token(state, client_id, form, path)
            if path.endswith("/revoke"):
                state.refresh_tokens.pop(form.get("token", ""), None)
                state.access_tokens.pop(form.get("token", ""), None)
                return self._reply(200)
            if path == "/introspect":
                return self._introspect(state, form)
        return self._reply(404)

    def _introspect(self, state: State, form: dict):
        found = state.access_tokens.get(form.get("token", ""))
        if found is None or found[1] < time.time():
            return self._reply(200, {"active": False})
        grant, expires = found
        return self._reply(
            200,
            {"active": True, "username": grant.user, "email": grant.user,
             "scope": grant.scope, "exp": int(expires), "client_id": grant.client_id},
        )  # fmt: skip

    def _issue(self, state: State, grant: Grant, path: str = "") -> dict:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        state.access_tokens[access] = (grant, time.time() + state.lifetime)
        state.refresh_tokens[refresh] = grant
        answer = {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": state.lifetime,
            "scope": grant.scope if state.granted_scope is None else state.granted_scope,
        }
        if "openid" in grant.scope.split():
            issuer, extra = state.issuer, {}
            tenant = path.removesuffix("/oauth2/v2.0/token")
            if tenant != path:
                # Microsoft's form: the issuer names the user's tenant, as `tid` does.
                issuer = f"{state.issuer}{tenant}/v2.0"
                extra["tid"] = tenant.strip("/")
            if state.email_verified is not None:
                extra["email_verified"] = state.email_verified
            answer["id_token"] = _id_token(
                grant, state.clients[grant.client_id], state.forged_issuer or issuer, extra
            )
        return answer

    def _token(self, state: State, client_id: str, form: dict, path: str = ""):
        kind = form.get("grant_type")
        if kind == "authorization_code":
            found = state.codes.pop(form.get("code", ""), None)
            if found is None:
                return self._reply(400, {"error": "invalid_grant"})
            grant, redirect_uri, challenge = found
            if (
                grant.client_id != client_id
                or form.get("redirect_uri") != redirect_uri
                or _challenge(form.get("code_verifier", "")) != challenge
            ):
                return self._reply(400, {"error": "invalid_grant"})
            return self._reply(200, self._issue(state, grant, path))
        if kind == "refresh_token":
            # Rotation: the old refresh token is spent by its use.
            grant = state.refresh_tokens.pop(form.get("refresh_token", ""), None)
            if grant is None or grant.client_id != client_id:
                return self._reply(
                    400, {"error": "invalid_grant", "error_description": "Token has been revoked."}
                )
            return self._reply(200, self._issue(state, grant, path))
        return self._reply(400, {"error": "unsupported_grant_type"})


class OAuthServer:
    def __init__(self, *, hostname: str = "localhost"):
        self.port = free_port()
        self.state = State()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self.httpd.state = self.state
        self.httpd.socket = server_context(hostname).wrap_socket(
            self.httpd.socket, server_side=True
        )
        self.url = f"https://{hostname}:{self.port}"
        self.httpd.base_url = self.state.issuer = self.url
        # Dovecot checks tokens here: plain HTTP on loopback, introspection only.
        self.introspection_port = free_port()
        self.introspection = ThreadingHTTPServer(("127.0.0.1", self.introspection_port), _Handler)
        self.introspection.state = self.state
        self.introspection.introspection_only = True
        self.introspection_url = f"http://127.0.0.1:{self.introspection_port}/introspect"

    def register(self, client_id: str, secret: str) -> None:
        self.state.clients[client_id] = secret

    def grant(self, user: str, client_id: str, scope: str = "mail") -> dict:
        """Tokens as if `user` had signed in through the browser flow."""
        with self.state.lock:
            return _Handler._issue(None, self.state, Grant(user, client_id, scope))

    def calls(self, path: str) -> list[dict]:
        """What was asked at paths ending so ("/token" counts Microsoft's
        /tenant/oauth2/v2.0/token too)."""
        return [form for called, form in self.state.requests if called.endswith(path)]

    def token_user(self, token: str) -> str | None:
        """Whose valid access token this is (for the suite's SMTP server's XOAUTH2)."""
        with self.state.lock:
            found = self.state.access_tokens.get(token)
        return found[0].user if found and found[1] >= time.time() else None

    def expire_access_tokens(self) -> None:
        """As if every access token had run out (the server decides, not the client)."""
        with self.state.lock:
            self.state.access_tokens.clear()

    def start(self) -> "OAuthServer":
        for server in (self.httpd, self.introspection):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in (self.httpd, self.introspection):
            server.shutdown()
            server.server_close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def authorize_as(url: str, ca_file: str, login_hint: str | None = None) -> dict:
    """What the browser does at the provider: sign in (as `login_hint` if given, else as
    the hint the app sent), and come back: the query the app's callback receives."""
    if login_hint:
        url = url.replace("login_hint=", f"login_hint={login_hint}&ignored=")
    context = ssl.create_default_context(cafile=ca_file)
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        opener.open(url)
    except urllib.error.HTTPError as answer:
        location = answer.headers["Location"]
        return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}
    raise AssertionError("the authorization server did not redirect back")
