"""A real SMTP server (aiosmtpd) with AUTH PLAIN/LOGIN over STARTTLS or implicit TLS."""

from base64 import b64decode
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.servers.certs import server_context
from tests.servers.dovecot import free_port


@dataclass
class Handler:
    refused_senders: set[str] = field(default_factory=set)
    # Recipients answered with a fixed reply, such as "550 ..." or "421 ...".
    recipient_replies: dict[str, str] = field(default_factory=dict)
    # Recipients whose message makes the server drop the connection after the data and
    # before its answer, as a server crashing at that moment would.
    cut_after_data: set[str] = field(default_factory=set)
    messages: list = field(default_factory=list)
    # XOAUTH2: is this access token valid for this user? (None: the mechanism refuses.)
    token_check: object = None

    async def auth_XOAUTH2(self, server, args):
        # Initial response: base64("user=<user>\x01auth=Bearer <token>\x01\x01").
        try:
            text = b64decode(args[1]).decode()
            fields = dict(part.split("=", 1) for part in text.split("\x01") if part)
            user, token = fields["user"], fields["auth"].removeprefix("Bearer ")
        except (IndexError, ValueError, KeyError):
            return AuthResult(success=False, handled=False, message="501 5.5.2 Bad XOAUTH2")
        if self.token_check is not None and self.token_check(user, token):
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False, message="535 5.7.8 Token not accepted")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.recipient_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address.lower() in self.refused_senders:
            return f"550 5.7.1 Sender {address} rejected: not owned by authenticated user"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(address.lower() in self.cut_after_data for address in envelope.rcpt_tos):
            server.transport.abort()
            return "250 never heard"
        self.messages.append(envelope)
        return "250 Message accepted"


class SmtpServer:
    def __init__(
        self,
        *,
        users: dict[str, str],
        implicit_tls: bool = False,
        auth: bool = True,
        hostname: str = "localhost",
        port: int | None = None,
        ca=None,
        smtputf8: bool = False,
    ):
        self.users = users
        self.port = port or free_port()
        self.handler = Handler()
        context = server_context(hostname, ca=ca)
        options = {"enable_SMTPUTF8": smtputf8}
        if auth:
            options.update(authenticator=self._authenticate, auth_required=True)
        else:
            # aiosmtpd advertises its built-in mechanisms unless every one is excluded.
            options.update(auth_exclude_mechanism=["LOGIN", "PLAIN"])
        if implicit_tls:
            # aiosmtpd cannot see that a connection is implicitly TLS, so its
            # "AUTH only over TLS" guard must be lifted here; the socket is TLS anyway.
            self.controller = Controller(
                self.handler,
                hostname="127.0.0.1",
                port=self.port,
                ssl_context=context,
                auth_require_tls=False,
                **options,
            )
        else:
            self.controller = Controller(
                self.handler,
                hostname="127.0.0.1",
                port=self.port,
                tls_context=context,
                require_starttls=auth,
                **options,
            )

    # Logins that answer like big providers do, for the classification tests.
    CANNED = {
        "apppw@example.test": "534 5.7.9 Application-specific password required.",
        "noauth@example.test": "535 5.7.139 Authentication unsuccessful, "
        "SmtpClientAuthentication is disabled for the Mailbox.",
    }

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode()
            if login in self.CANNED:
                return AuthResult(success=False, handled=False, message=self.CANNED[login])
            if self.users.get(login) == auth_data.password.decode():
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> "SmtpServer":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
