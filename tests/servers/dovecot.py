"""A real Dovecot IMAP server for tests, started on free loopback ports with its own
config under a temp dir (see ../shared/notes for the recipe it follows)."""

import grp
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers.certs import test_ca

_handed_out: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, and not one this process handed out before: the kernel
    may offer a just-closed port again, and two listeners of one server would clash."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class DovecotUser:
    name: str
    password: str
    extra: str = ""  # passdb extra fields, e.g. "nologin reason=..."


@dataclass
class Dovecot:
    root: Path
    users: list[DovecotUser]
    hostname: str = "localhost"
    imap_port: int = field(default_factory=free_port)
    imaps_port: int = field(default_factory=free_port)
    strict_imap_port: int = field(default_factory=free_port)
    # Dovecot's "high-performance" login mode, as busy production servers run it (the
    # benchmark): long-lived login processes instead of one new process per connection.
    performance: bool = False
    # Where Dovecot checks OAuth 2.0 tokens (XOAUTH2, OAUTHBEARER); None: passwords only.
    oauth_introspection_url: str | None = None
    # Emulating another family of servers (../shared/notes/imap-server-families.md):
    # exactly these capabilities (None: Dovecot's own), the personal namespace's prefix
    # and separator (Courier and Cyrus: "INBOX." and "."), and the special-use folders
    # (name inside the namespace -> flag; None: Sent, a German Sent, Trash and Junk).
    capabilities: str | None = None
    namespace_prefix: str = ""
    separator: str = "/"
    special_use: dict[str, str] | None = None
    # The CA that issues the server's certificate (None: the suite's; make dev-mail keeps
    # its own under the var dir).
    ca: object = None
    # The account a root test runs Dovecot as, rootless (None: the one running this).
    user: str | None = None
    process: subprocess.Popen | None = None

    def config(self) -> str:
        d = self.root
        login_mode = "service_count = 0\n  process_min_avail = 2" if self.performance else ""
        return f"""
protocols = imap
listen = 127.0.0.1, 127.0.0.2
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/log/dovecot.log
ssl = required
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = yes
auth_mechanisms = plain login{" xoauth2 oauthbearer" if self.oauth_introspection_url else ""}
auth_cache_size = 0
auth_failure_delay = 0
mail_location = maildir:{d}/mail/%u/Maildir
mail_fsync = never
first_valid_uid = {min(self._mail_ids()[0], 500) or 1}
default_login_user = {self._process_user()}
default_internal_user = {self._process_user()}
{self._process_group()}{f"imap_capability = {self.capabilities}" if self.capabilities else ""}
namespace inbox {{
  inbox = yes
  prefix = {self.namespace_prefix}
  separator = {self.separator}
{self._special_use()}}}
{self._oauth_passdb()}passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
service anvil {{
  {self._no_chroot()}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  {login_mode}
  {self._no_chroot()}
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  # A client on 127.0.0.1 talking to 127.0.0.2 is not "local" to Dovecot, so this
  # listener refuses plaintext LOGIN before STARTTLS (LOGINDISABLED), like a real server.
  inet_listener imap_strict {{
    address = 127.0.0.2
    port = {self.strict_imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
"""

    @property
    def rootless(self) -> bool:
        """Dovecot's rootless mode: every process is one ordinary account (make dev-mail on
        a laptop), no setuid, no chroot. As root it drops its processes to nobody."""
        return self.user is not None or os.geteuid() != 0

    def _account(self) -> pwd.struct_passwd:
        if self.user is not None:
            return pwd.getpwnam(self.user)
        return pwd.getpwuid(os.geteuid()) if self.rootless else pwd.getpwnam("nobody")

    def _process_user(self) -> str:
        return self._account().pw_name

    def _process_group(self) -> str:
        if not self.rootless:
            return ""
        return f"default_internal_group = {grp.getgrgid(self._account().pw_gid).gr_name}\n"

    def _no_chroot(self) -> str:
        # Only root may chroot.
        return "chroot =" if self.rootless else ""

    def _mail_ids(self) -> tuple[int, int]:
        account = self._account()
        return account.pw_uid, account.pw_gid

    def _special_use(self) -> str:
        folders = self.special_use
        if folders is None:
            # "Gesendete Objekte": a Sent folder whose name no list of common names holds
            # (German Outlook's).
            folders = {
                "Sent": "\\Sent", "Gesendete Objekte": "\\Sent", "Trash": "\\Trash",
                "Junk": "\\Junk",
            }  # fmt: skip
        return "".join(
            f'  mailbox "{name}" {{\n    special_use = {flag}\n  }}\n'
            for name, flag in folders.items()
        )

    def _oauth_passdb(self) -> str:
        if not self.oauth_introspection_url:
            return ""
        (self.root / "dovecot-oauth2.conf.ext").write_text(
            f"introspection_mode = post\nintrospection_url = {self.oauth_introspection_url}\n"
            "force_introspection = yes\nusername_attribute = username\n"
            "active_attribute = active\nactive_value = true\ntimeout_msecs = 5000\n"
        )
        return (
            "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
            f"  args = {self.root}/dovecot-oauth2.conf.ext\n}}\n"
        )

    def start(self) -> "Dovecot":
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not Path(binary).exists():
            raise RuntimeError("Dovecot is not installed (make test installs dovecot-imapd).")
        # Dovecot's auth and login processes run as nobody and must reach these files.
        self.root.chmod(0o755)
        for sub in ("run", "state", "log", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        uid, gid = self._mail_ids()
        if os.geteuid() == 0 and not self.rootless:
            os.chown(self.root / "mail", uid, gid)
        cert = (self.ca or test_ca()).issue_cert(self.hostname)
        cert.private_key_pem.write_to_path(str(self.root / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self.root / "cert.pem"))
        lines = [
            f"{u.name}:{{PLAIN}}{u.password}:{uid}:{gid}::{self.root}/mail/{u.name}::{u.extra}"
            for u in self.users
        ]
        (self.root / "users").write_text("\n".join(lines) + "\n")
        (self.root / "dovecot.conf").write_text(self.config())
        as_user = {}
        if self.user is not None and os.geteuid() == 0:
            for path in [self.root, *self.root.rglob("*")]:
                os.chown(path, uid, gid)
            as_user = {"user": uid, "group": gid, "extra_groups": []}
        self.process = subprocess.Popen(
            [binary, "-F", "-c", str(self.root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **as_user,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Dovecot exited: {self.process.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.imaps_port), timeout=0.5).close()
                socket.create_connection(("127.0.0.1", self.imap_port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"Dovecot did not start: {self.log()}")

    def doveadm(self, *args: str) -> str:
        binary = shutil.which("doveadm") or "/usr/bin/doveadm"
        result = subprocess.run(
            [binary, "-c", str(self.root / "dovecot.conf"), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: {result.stderr}")
        return result.stdout

    def log(self) -> str:
        path = self.root / "log" / "dovecot.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
