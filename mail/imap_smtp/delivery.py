"""Sending over SMTP, and the Sent copy over IMAP: the server's answers become
MailErrors whose kind decides what becomes of the email (mail/errors.py): LATER
(nothing was handed over, or the server said "try later"), OWNER or NEVER (the owner,
an administrator or the message must change), UNKNOWN ("handed_over": the connection
broke after the message was handed over and before the server's answer).
"""

import contextlib
import fcntl
import imaplib
import os
import re
import smtplib
import socket
import ssl
import struct
import termios
import time

from django.conf import settings

from mail.errors import MailError
from mail.pace import SEND_PIECE

# Common names of the Sent folder, looked for inside the personal namespace when no
# folder is marked \Sent.
SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "Sent Mail")


def _said(code: int, reply) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"[:300]


def _refusal(code: int, reply, what: str, *, permanent: str = "rejected") -> MailError:
    # 4xx: the server says "not now" (RFC 5321), and it did not take the message.
    kind = "temporary" if 400 <= code < 500 else permanent
    return MailError(kind, f"{what} (the server said: {_said(code, reply)})")


END = b".\r\n"  # after the message's last line break: the end of DATA
# How long the server may take to confirm a message whose end it has; below the sending
# lease (SENDING_CLAIM_LEASE_SECONDS, 10 minutes), after which the sweep calls a send
# whose worker went quiet "may have been sent".
END_REPLY_SECONDS = 300


def _upload(client, body: memoryview) -> None:
    """Write `body` piece by piece and wait until the server's side has acknowledged all
    of it: within half the sending lease (a longer upload would be taken for a dead
    worker's, and sent again beside it; 5 minutes by default), and with progress at least
    every read timeout.
    Raises TimeoutError or ConnectionError: the message was not handed over."""
    sock = client.sock
    timeout = sock.gettimeout() or settings.MAIL_CONNECT_TIMEOUT
    # Never less than a few read timeouts, however short a lease is set.
    until = time.monotonic() + max(settings.SENDING_CLAIM_LEASE_SECONDS / 2, 4 * timeout)
    with body:
        for start in range(0, len(body), SEND_PIECE):
            if time.monotonic() > until:
                raise TimeoutError("the server took the message too slowly")
            client.send(body[start : start + SEND_PIECE])
    last, since = _unsent(sock), time.monotonic()
    while last:
        if time.monotonic() - since > timeout or time.monotonic() > until:
            raise TimeoutError(f"the server did not take the last {last} bytes of the message")
        time.sleep(0.05)
        unsent = _unsent(sock)
        if unsent < last:
            since = time.monotonic()
        last = unsent
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise ConnectionError(error, os.strerror(error))


def _unsent(sock) -> int:
    """Bytes written to `sock` its peer has not acknowledged (Linux's SIOCOUTQ); 0 where
    that cannot be asked, as before the wait existed."""
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    except (OSError, AttributeError):
        return 0
    return struct.unpack("i", answer)[0]


def _dot_stuffed(raw: bytes) -> bytes:
    data = re.sub(rb"(?m)^\.", b"..", raw)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + END


def _envelope_options(client, addresses: list[str]) -> list[str]:
    """MAIL FROM's options: SMTPUTF8 (RFC 6531) where an address has letters outside
    ASCII (a domain the compose form left in Unicode never does: it sends its xn-- form),
    if the server takes it; else the email cannot go through this server, said before
    anything is sent (smtplib raised UnicodeEncodeError at RCPT, a crash)."""
    wide = [address for address in addresses if not address.isascii()]
    if not wide:
        return []
    if not client.has_extn("smtputf8"):
        raise MailError(
            "non_ascii",
            f"The mail server does not take addresses with letters outside ASCII, such as "
            f"{wide[0]}, so this email was not sent. Use another address for it.",
        )
    client.command_encoding = "utf-8"
    return ["SMTPUTF8"]


def deliver(client, *, sender: str, recipients: list[str], raw: bytes, handing_over) -> None:
    """Send `raw` to `recipients` over a signed-in SMTP session, then close it;
    `handing_over()` is called just before the line that ends the message goes out, so
    the caller can record that a retry is no longer safe (or raise to stop: the
    connection is then dropped mid-DATA, which makes the server discard it)."""
    handed_over = False
    try:
        code, reply = client.mail(sender, _envelope_options(client, [sender, *recipients]))
        if code != 250:
            raise _refusal(
                code, reply, f"The server would not send as {sender}", permanent="smtp_refuses"
            )
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            if code not in (250, 251):
                raise _refusal(code, reply, f"The server refused the recipient {recipient}")
        code, reply = client.docmd("DATA")
        if code != 354:
            raise _refusal(code, reply, "The server would not take the message")
        # The message counts as handed over with the line that ends it: a connection
        # that breaks before, however much went out, makes the server discard it
        # (RFC 5321), and the email is sent again later, not "may have been sent". The
        # body is written, and waited for until the server has it (our own kernel holds
        # megabytes of it otherwise), within the upload's time.
        data = _dot_stuffed(raw)
        _upload(client, memoryview(data)[: -len(END)])
        try:
            handing_over()
        except BaseException:
            client.close()
            raise
        handed_over = True
        client.send(END)
        # The server checks the message before it answers: RFC 5321 gives it 10 minutes,
        # a read timeout called a slow one "may have been sent".
        client.sock.settimeout(max(client.sock.gettimeout() or 0, END_REPLY_SECONDS))
        client.allowance = max(client.allowance, END_REPLY_SECONDS)
        code, reply = client.getreply()
        if code != 250:
            # The server answered: it did not take the message, so this is no guess.
            raise _refusal(code, reply, "The server did not accept the message")
    except MailError:
        raise
    except (OSError, smtplib.SMTPException, ssl.SSLError) as error:
        if handed_over:
            raise MailError(
                "handed_over",
                "The connection to the mail server broke after the message was handed over "
                "and before the server confirmed it. It may have been sent: check the "
                "recipient's copy or your Sent folder before sending it again.",
            ) from None
        raise MailError(
            "timeout" if isinstance(error, TimeoutError) else "connection",
            f"The connection to the mail server broke before the message was handed over "
            f"({type(error).__name__}).",
        ) from None
    finally:
        with contextlib.suppress(Exception):
            client.quit()
        with contextlib.suppress(Exception):
            client.close()


def _separator(delimiter) -> str:
    if isinstance(delimiter, bytes):
        return delimiter.decode("ascii", "replace")
    return delimiter or ""


def personal_namespace(client, folders) -> tuple[str, str]:
    """The personal namespace's prefix and separator: from NAMESPACE (RFC 2342) when the
    server offers it, else inferred from the listing. Courier and Cyrus keep every
    folder under "INBOX." with "." as separator; Dovecot and most others at the top."""
    if client.has_capability("NAMESPACE"):
        try:
            personal = client.namespace().personal
        except imaplib.IMAP4.error:
            personal = None
        if personal:
            prefix, separator = personal[0]
            return prefix or "", separator or ""
    separator = next((_separator(d) for _f, d, _n in folders if d), "")
    others = [name for _f, _d, name in folders if name.upper() != "INBOX"]
    if separator and others and all(n.upper().startswith("INBOX" + separator) for n in others):
        return "INBOX" + separator, separator
    return "", separator


def sent_folder(client) -> str:
    """The folder the server marks \\Sent (SPECIAL-USE; Cyrus writes it \\sent), else one
    with a common name inside the personal namespace; made there if there is none."""
    folders = client.list_folders()
    for flags, _delimiter, name in folders:
        if any(flag.lower() == b"\\sent" for flag in flags):
            return name
    prefix, separator = personal_namespace(client, folders)
    names = {name.lower(): name for _flags, _delimiter, name in folders}
    candidates = [prefix + name for name in SENT_NAMES]
    if separator and not prefix:
        # Servers that keep folders under INBOX without saying so (no NAMESPACE).
        candidates += [f"INBOX{separator}{name}" for name in SENT_NAMES]
    for candidate in candidates:
        if candidate.lower() in names:
            return names[candidate.lower()]
    fallback = f"INBOX{separator}Sent" if separator and not prefix else None
    return _create(client, prefix + "Sent", fallback)


def _create(client, name: str, fallback: str | None) -> str:
    try:
        client.create_folder(name)
    except imaplib.IMAP4.error as error:
        if "ALREADYEXISTS" in str(error).upper():
            pass  # made meanwhile, by another client or an earlier try
        elif fallback:
            # Inferred wrongly: a fresh mailbox lists only INBOX, whatever the namespace.
            return _create(client, fallback, None)
        else:
            raise
    with contextlib.suppress(Exception):
        client.subscribe_folder(name)
    return name


def _holds(client, folder: str, message_id: str) -> bool:
    client.select_folder(folder, readonly=True)
    return bool(client.search(["HEADER", "Message-ID", message_id]))


# RFC 5530 codes for "not now": the copy may work later.
IMAP_TEMPORARY = ("[UNAVAILABLE]", "[INUSE]", "[LIMIT]")


def copy_to_sent(client, *, raw: bytes, message_id: str = "", look_first: bool = False) -> str:
    """Append the message to the Sent folder over a signed-in IMAP session, read, then log
    out; returns the folder. With `look_first`, an earlier try may have stored it already
    (its answer was lost), so a copy with the same Message-ID found there counts as done."""
    try:
        folder = sent_folder(client)
        if not (look_first and message_id and _holds(client, folder, message_id)):
            client.append(folder, raw, flags=[b"\\Seen"])
        return folder
    except (OSError, EOFError, imaplib.IMAP4.abort) as error:
        raise MailError(
            "timeout" if isinstance(error, TimeoutError) else "connection_lost",
            f"The connection broke during the copy ({type(error).__name__}).",
        ) from None
    except imaplib.IMAP4.error as error:
        said = " ".join(str(error).split())[:300]
        kind = "temporary" if any(c in said.upper() for c in IMAP_TEMPORARY) else "server_error"
        raise MailError(kind, f"The server refused the copy ({said}).") from None
    finally:
        with contextlib.suppress(Exception):
            client.logout()
