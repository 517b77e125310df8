"""A local mail server to try the wizard on: `make dev-mail`.

Starts the test suite's Dovecot (IMAP over SSL/TLS) and aiosmtpd (SMTP with
STARTTLS) on fixed loopback ports, writes their test CA to var/dev-mail/ca.pem
(which `make run` then trusts), and registers a provider "Local test mail" for the
domain example.test, with the system setting AllowInternalMailServers turned on.
Ctrl-C stops it.
"""

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

IMAPS_PORT = int(os.environ.get("DEV_MAIL_IMAPS_PORT", "10993"))
SMTP_PORT = int(os.environ.get("DEV_MAIL_SMTP_PORT", "10587"))
USERS = {"demo@example.test": "demo-secret", "team@example.test": "team-secret"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsetup.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()
    from django.conf import settings

    from providers.models import EmailProvider, ProviderDomain, Source
    from systemsettings.models import SystemSetting
    from tests.servers.certs import test_ca
    from tests.servers.dovecot import Dovecot, DovecotUser
    from tests.servers.smtp import SmtpServer

    ca_file = Path(settings.VAR_DIR) / "dev-mail" / "ca.pem"
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    test_ca().cert_pem.write_to_path(str(ca_file))

    dovecot = Dovecot(
        root=Path(tempfile.mkdtemp(prefix="mailsetup-dev-dovecot-")),
        users=[DovecotUser(name, password) for name, password in USERS.items()],
        imaps_port=IMAPS_PORT,
    ).start()
    smtp = SmtpServer(users=USERS, port=SMTP_PORT).start()

    provider, _ = EmailProvider.objects.update_or_create(
        name="Local test mail",
        defaults={
            "imap_host": "localhost",
            "imap_port": IMAPS_PORT,
            "imap_security": "ssl",
            "smtp_host": "localhost",
            "smtp_port": SMTP_PORT,
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
    print(f"Dovecot IMAPS on localhost:{IMAPS_PORT}, SMTP (STARTTLS) on localhost:{SMTP_PORT}.")
    print(f"Their CA is {ca_file}; `make run` trusts it (MAIL_EXTRA_CA_FILE).")
    print("AllowInternalMailServers is on, so the wizard may connect to localhost.")
    for name, password in USERS.items():
        print(f"  Add the mailbox {name} with the password {password}")
    print("Ctrl-C stops the mail servers.")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        smtp.stop()
        dovecot.stop()


if __name__ == "__main__":
    main()
