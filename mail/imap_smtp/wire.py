"""The only module that reaches into imapclient's private attributes (`_imap`,
`_checkok`, `_proc_folder_list`) and imaplib's (`_simple_command`, `_new_tag`,
`_untagged_response`), for what imapclient 3.0 does not offer: LIST-STATUS in one round
trip and a LOGOUT that does not wait for its answer. Written for imapclient 4.1.0 (the
version installed; pyproject allows 3.x and 4.x, whose private parts used here are the
same) and imaplib of Python 3.12/3.13; tests/test_mail_contract.py pins what it relies on.
"""

import contextlib

from imapclient import IMAPClient
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.response_parser import parse_response
from imapclient.util import chunk as pairs_of


def goodbye(client: IMAPClient) -> None:
    """LOGOUT without waiting for the server's answer, which changes nothing."""
    with contextlib.suppress(Exception):
        imap = client._imap
        imap.send(imap._new_tag() + b" LOGOUT\r\n")
    with contextlib.suppress(Exception):
        client.shutdown()


def list_with_status(
    client: IMAPClient, items: list[bytes], *, special_use: bool
) -> tuple[list, dict]:
    """LIST-STATUS (RFC 5819): every folder and its status in one round trip, where a
    STATUS per folder would take one each. Returns list_folders()'s triples and
    {path: status items}; a folder the server gave no status for is simply missing."""
    imap = client._imap
    wanted = b" ".join(items).decode()
    # With RETURN options a server gives the special-use flags only when asked.
    options = f"{'SPECIAL-USE ' if special_use else ''}STATUS ({wanted})"
    typ, data = imap._simple_command("LIST", '""', '"*"', "RETURN", f"({options})")
    client._checkok("list", typ, data)
    typ, data = imap._untagged_response(typ, data, "LIST")
    folders = client._proc_folder_list(data)
    lines = [line for line in imap.untagged_responses.pop("STATUS", []) if line]
    statuses = {}
    for name, values in pairs_of(parse_response(lines), size=2):
        if isinstance(name, int):
            name = str(name)
        elif client.folder_encode:
            name = decode_utf7(name)
        statuses[name] = dict(pairs_of(values, size=2))
    return folders, statuses
