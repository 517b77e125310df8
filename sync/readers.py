"""sync's readers: how a mailbox of each backend's `reader` (mail.backend.MailBackend)
is downloaded, over a session its backend opened. sync.services runs one with the
mailbox claimed and turns what goes wrong into the run's outcome; what a protocol's
exceptions mean is the backend's to say (MailBackend.read_failure)."""

import functools
from datetime import timedelta

from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from accounts.models import EmailAccount
from accounts.oauth import access_token, session_for
from mail.errors import MailError
from mail.registry import backend_for
from systemsettings.selectors import internal_mail_servers_allowed

from .delta import DeltaSyncer
from .engine import AccountSyncer
from .items import items_sync
from .models import MailboxSync, SyncRun

# An Exchange mailbox's meetings, tasks and contacts are read at most this often by the
# scheduled runs; "Import now" and saving their settings read them at once.
ITEMS_EVERY = timedelta(hours=1)


def session_open(account: EmailAccount):
    """A signed-in reading session of the mailbox (its backend's open_reader)."""
    return session_for(backend_for(account.provider).open_reader, account)


@sensitive_variables("secret")
def session_opener(account: EmailAccount):
    """Another session like the run's first, for the fetching thread (which never
    touches the database): the sign-in's setting and secret are read here, now. An
    access token read now may run out before a long run ends: a refusal then is the
    token's, for the next run to refresh, not the owner's to fix."""
    from providers.addresses import normalize_address

    if account.uses_oauth:
        secret = {"access_token": access_token(account_id=account.pk)}
    else:
        secret = {"password": account.get_password()}
    open_one = functools.partial(
        backend_for(account.provider).open_reader, provider=account.provider,
        address=normalize_address(account.address), login=account.login,
        allow_internal=internal_mail_servers_allowed(), **secret,
    )  # fmt: skip
    if not account.uses_oauth:
        return open_one

    def with_token():
        try:
            return open_one()
        except MailError as error:
            if error.kind != "credentials":
                raise
            raise MailError("token_unavailable", f"{error} (the sign-in token ran out)") from None

    return with_token


class ImapReader:
    """Reads a mailbox over IMAP (sync.engine)."""

    @staticmethod
    def read(account: EmailAccount, run: SyncRun, *, renew, items_only: bool) -> None:
        backend = backend_for(account.provider)
        client = session_open(account)
        syncer = None
        try:
            syncer = AccountSyncer(
                account=account, client=client, run=run, renew=renew,
                open_session=lambda: session_opener(account),
            )  # fmt: skip
            folders = syncer.folders_to_sync(syncer.refresh_folders())
            syncer.progress_start(folders)
            for folder in folders:
                syncer.sync_folder_isolated(folder)
        finally:
            # The syncer may have gone on in a new session (engine's `_reopen_after`);
            # if it was never made, the session opened for it is closed all the same.
            backend.close_reader(syncer.client if syncer is not None else client)


class DeltaRunner:
    """Reads a mailbox whose backend reads by changes (mail.reading.DeltaReader, sync.delta),
    with its meetings, tasks and address book where the backend offers them
    (`items_reader`, sync.items) at most every ITEMS_EVERY (or now, `items_only`)."""

    @staticmethod
    def read(account: EmailAccount, run: SyncRun, *, renew, items_only: bool) -> None:
        backend = backend_for(account.provider)
        reader = session_open(account)
        try:
            syncer = DeltaSyncer(account=account, reader=reader, run=run, renew=renew)
            folders = syncer.refresh_folders()
            if not items_only:
                chosen = syncer.folders_to_sync(folders)
                syncer.progress_start(chosen)
                for folder in chosen:
                    syncer.sync_folder_isolated(folder)
            items = backend.items_reader(reader)
            if items is not None:
                last = (
                    MailboxSync.objects.filter(account=account)
                    .values_list("items_imported_at", flat=True)
                    .first()
                )
                if items_only or last is None or last < timezone.now() - ITEMS_EVERY:
                    items_sync(items=items, account=account, run=run, manual=items_only)
                    MailboxSync.objects.filter(account=account).update(
                        items_imported_at=timezone.now()
                    )
        finally:
            backend.close_reader(reader)


# sync's reader for each backend's `reader` (mail.backend.MailBackend.reader).
READERS = {"imap": ImapReader, "delta": DeltaRunner}
