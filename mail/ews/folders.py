"""An Exchange mailbox's folder tree in the app's terms."""

import contextlib

from ..backend import CONTACTS, ListedFolder

# Exchange's well-known folders, by exchangelib's Account attribute, as special uses.
DISTINGUISHED = {"sent": "\\sent", "trash": "\\trash", "junk": "\\junk", "drafts": "\\drafts"}
DELIMITER = "/"


def _mail_folder(ews_folder) -> bool:
    folder_class = getattr(ews_folder, "folder_class", None) or "IPF.Note"
    return folder_class == "IPF.Note" or folder_class.startswith("IPF.Note.")


def folder_tree(
    ews, known_special: dict[str, str] | None = None
) -> list[tuple[ListedFolder, object]]:
    """Every folder under the mailbox's root ("Top of Information Store"), as paths
    joined with "/", each with exchangelib's folder. Which folders are Sent, Trash, ...
    is asked (a GetFolder each) only when the tree holds a folder `known_special` (the
    special uses stored before, by folder id) does not know."""
    from exchangelib.errors import ErrorFolderNotFound

    root = ews.msg_folder_root
    found = [f for f in root.walk() if f.id]
    names = {f.id: (f.name, f.parent_folder_id.id if f.parent_folder_id else None) for f in found}

    def path_of(ident: str) -> str:
        parts = []
        while ident in names:
            name, ident = names[ident]
            parts.append((name or "").replace(DELIMITER, " "))
        return DELIMITER.join(reversed(parts))

    known_special = known_special or {}
    if all(f.id in known_special for f in found):
        special = {i: use for i, use in known_special.items() if use in DISTINGUISHED.values()}
    else:
        special = {}
        for attribute, use in DISTINGUISHED.items():
            with contextlib.suppress(ErrorFolderNotFound):  # a server without that folder
                special[getattr(ews, attribute).id] = use
    tree = []
    for ews_folder in found:
        use = special.get(ews_folder.id, "")
        if not use and (getattr(ews_folder, "folder_class", "") or "").startswith("IPF.Contact"):
            use = CONTACTS
        listed = ListedFolder(
            path=path_of(ews_folder.id),
            delimiter=DELIMITER,
            special_use=use,
            selectable=_mail_folder(ews_folder),
            server_id=ews_folder.id,
        )
        tree.append((listed, ews_folder))
    return tree
