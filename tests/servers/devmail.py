"""A local mail server to try the app on: `make dev-mail`.

Starts the test suite's Dovecot (IMAP over SSL/TLS) and aiosmtpd (SMTP with STARTTLS)
on fixed loopback ports, with everything kept under the app's var dir
(`MAILSETUP_VAR_DIR`, default var/), in var/dev-mail/:
- ca.pem and ca-key.pem, the servers' own CA, made once: with DEBUG on the app trusts
  ca.pem wherever the var dir is (settings.MAIL_DEV_CA_FILE), started before or after;
- dovecot/, Dovecot's configuration, log and the mailboxes' mail, which survives restarts.
The demo mailbox is filled once with a sample week of mail (tests/servers/devmail_sample.py);
the app's database gets the provider "Local test mail" for example.test, the system
setting AllowInternalMailServers on, and the demo companies with their contacts.
Ctrl-C stops the servers; the mail stays.
"""

import contextlib
import logging
import os
import signal
import ssl
import stat
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import trustme
from imapclient import IMAPClient

from tests.servers.devmail_sample import DEMO, DEMO_COMPANIES, SAMPLES, message_bytes, when

IMAPS_PORT = int(os.environ.get("DEV_MAIL_IMAPS_PORT", "10993"))
SMTP_PORT = int(os.environ.get("DEV_MAIL_SMTP_PORT", "10587"))
USERS = {DEMO: "demo-secret", "team@example.test": "team-secret"}
PROVIDER = "Local test mail"
SEEDED = "seeded"  # a file in Dovecot's folder once the sample is in


def dev_mail_dir(var_dir: Path) -> Path:
    return Path(var_dir) / "dev-mail"


def _write_private(path: Path, data: bytes, mode: int) -> None:
    # Whole or not at all: a reader (the app, at its next connection) never sees half.
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(data)
    os.chmod(handle.name, mode)
    os.replace(handle.name, path)


def dev_ca(folder: Path) -> trustme.CA:
    """The servers' CA: made on the first start, then read back, so a running app
    keeps trusting the servers across their restarts."""
    cert, key = folder / "ca.pem", folder / "ca-key.pem"
    if cert.exists() and key.exists():
        return trustme.CA.from_pem(cert.read_bytes(), key.read_bytes())
    ca = trustme.CA(organization_name="mailsetup make dev-mail")
    _write_private(key, ca.private_key_pem.bytes(), 0o600)
    _write_private(cert, ca.cert_pem.bytes(), 0o644)
    return ca


def _unreachable_parent(path: Path) -> Path | None:
    """A folder above `path` that Dovecot's mail processes (user nobody) cannot pass."""
    for folder in [path, *path.parents]:
        if folder.exists() and not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None


class DevMail:
    """The servers of `make dev-mail`, their data under `var_dir`."""

    def __init__(self, var_dir: Path, *, imaps_port: int = IMAPS_PORT, smtp_port: int = SMTP_PORT):
        self.folder = dev_mail_dir(var_dir)
        self.imaps_port, self.smtp_port = imaps_port, smtp_port
        self.dovecot = self.smtp = None

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def start(self) -> "DevMail":
        from tests.servers.dovecot import Dovecot, DovecotUser
        from tests.servers.smtp import SmtpServer

        self.folder.mkdir(parents=True, exist_ok=True)
        root = self.folder / "dovecot"
        blocked = os.geteuid() == 0 and _unreachable_parent(self.folder)
        if blocked:
            raise SystemExit(
                f"Dovecot's mail processes run as the user nobody and cannot enter {blocked} "
                f"(no x permission for others). Run `chmod o+x {blocked}`, or set "
                "MAILSETUP_VAR_DIR to a folder they can reach."
            )
        self.ca = dev_ca(self.folder)
        root.mkdir(exist_ok=True)
        self.dovecot = Dovecot(
            root=root,
            users=[DovecotUser(name, password) for name, password in USERS.items()],
            imaps_port=self.imaps_port,
            ca=self.ca,
        ).start()
        self.smtp = SmtpServer(users=USERS, port=self.smtp_port, ca=self.ca).start()
        return self

    def stop(self) -> None:
        if self.smtp is not None:
            self.smtp.stop()
        if self.dovecot is not None:
            self.dovecot.stop()

    def _client(self, user: str) -> IMAPClient:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        client = IMAPClient("localhost", port=self.imaps_port, ssl_context=context, timeout=30)
        client.login(user, USERS[user])
        return client

    def seed(self, *, now: datetime | None = None) -> int:
        """Put the sample mail into the demo mailbox, once: later starts find it there
        (and whatever the user did with it). Returns how many emails were added.
        Safe to run again after an interruption: a message already in its folder (by
        Message-ID) is not added twice."""
        marker = self.dovecot.root / SEEDED
        if marker.exists():
            return 0
        now = now or datetime.now(UTC)
        added = 0
        with self._client(DEMO) as client:
            for sample in SAMPLES:
                if not client.folder_exists(sample.folder):
                    client.create_folder(sample.folder)
                client.select_folder(sample.folder)
                if client.search(["HEADER", "Message-ID", sample.message_id()]):
                    continue
                flags = [b"\\Seen"] if sample.seen else []
                client.append(
                    sample.folder,
                    message_bytes(sample, now),
                    flags=flags,
                    msg_time=when(sample, now),
                )
                added += 1
            for folder in {sample.folder for sample in SAMPLES}:
                client.subscribe_folder(folder)
        marker.write_text(f"{now.isoformat()} {added}\n")
        return added

    def register(self):
        """The app's side: the provider for example.test, internal servers allowed, the
        demo companies and their contacts. Running it again changes nothing but the
        provider's ports."""
        from crm.models import Company, Contact, ContactAddress
        from providers.models import EmailProvider, ProviderDomain, Source
        from systemsettings.models import SystemSetting

        provider, _ = EmailProvider.objects.update_or_create(
            name=PROVIDER,
            defaults={
                "imap_host": "localhost",
                "imap_port": self.imaps_port,
                "imap_security": "ssl",
                "smtp_host": "localhost",
                "smtp_port": self.smtp_port,
                "smtp_security": "starttls",
                "source": Source.ADMIN,
            },
        )
        ProviderDomain.objects.update_or_create(
            domain="example.test", defaults={"provider": provider, "source": Source.ADMIN}
        )
        SystemSetting.objects.update_or_create(
            code="AllowInternalMailServers", defaults={"value_type": "boolean", "value": "yes"}
        )
        for name, web_domain, people in DEMO_COMPANIES:
            company, _ = Company.objects.get_or_create(
                web_domain=web_domain, defaults={"name": name}
            )
            for person, address, job_title, phone in people:
                if ContactAddress.objects.filter(address=address).exists():
                    continue
                contact = Contact.objects.create(
                    name=person, company=company, job_title=job_title, phone=phone
                )
                ContactAddress.objects.create(contact=contact, address=address)
        return provider


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsetup.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()
    from django.conf import settings

    # aiosmtpd logs every connection's commands at INFO: noise in a developer's terminal.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    dev = DevMail(Path(settings.VAR_DIR)).start()
    try:
        added = dev.seed()
        dev.register()
        print(f"Dovecot IMAPS on localhost:{dev.imaps_port}, SMTP (STARTTLS) on "
              f"localhost:{dev.smtp_port}; mail kept in {dev.dovecot.root}.")  # fmt: skip
        print(
            f"Added {added} sample emails to {DEMO}."
            if added
            else f"{DEMO} keeps its mail from before."
        )
        print(f"Their CA is {dev.ca_file}; the app trusts it with DEBUG on (make run).")
        print("AllowInternalMailServers is on, so the wizard may connect to localhost.")
        print("Demo company: Northwind Traders (northwind.test) and its contacts.")
        for name, password in USERS.items():
            print(f"  Add the mailbox {name} with the password {password}")
        print("Ready. Ctrl-C stops the mail servers (their mail stays).", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            while True:
                time.sleep(3600)
    finally:
        dev.stop()


if __name__ == "__main__":
    main()
