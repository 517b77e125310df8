"""The settings page's folder picker: which folders are downloaded."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from sharing.access import mailbox_or_404
from sharing.selectors import MailboxAction
from sync.selectors import folders_on_server
from sync.services import FolderListError, folders_choose, folders_load

from ..forms import FolderChoiceForm
from ..models import EmailAccount
from .settings import SETTINGS, section_response

FOLDER_INDENTS = 12


def _folder_rows(folders, form: FolderChoiceForm) -> list[dict]:
    """The folder tree as rows with depth, showing what the user ticked if the form
    came back with an error, else what is saved."""
    if form.is_bound:
        chosen = set(form.data.getlist("chosen"))
        subfolders = set(form.data.getlist("subfolders"))
    else:
        chosen = {str(f.pk) for f in folders if f.chosen and f.selectable}
        subfolders = {str(f.pk) for f in folders if f.include_subfolders}
    # A folder that holds no email and none below it that does (Exchange's Calendar,
    # Contacts and Tasks; an IMAP \\Noselect with nothing under it) is nothing to choose.
    holds_mail = set()
    for folder in folders:
        if folder.selectable and folder.delimiter:
            parts = folder.path.split(folder.delimiter)
            holds_mail |= {folder.delimiter.join(parts[:end]) for end in range(1, len(parts))}
    rows = []
    for folder in sorted(folders, key=lambda f: f.path.lower() if f.path != "INBOX" else ""):
        # Kept while "with subfolders" is set on it: a save of the picker writes every
        # folder's choice, and one not shown would lose it unseen.
        if (
            not folder.selectable
            and folder.path not in holds_mail
            and not folder.include_subfolders
        ):
            continue
        parts = folder.path.split(folder.delimiter) if folder.delimiter else [folder.path]
        rows.append(
            {
                "folder": folder,
                "depth": len(parts) - 1,
                # Indented by classes (the page's policy has no inline styles), so
                # the deepest levels share the last step.
                "indent": min(len(parts) - 1, FOLDER_INDENTS),
                "name": parts[-1],
                "chosen": str(folder.pk) in chosen,
                "subfolders": str(folder.pk) in subfolders,
            }
        )
    return rows


def _saved_form(account: EmailAccount) -> FolderChoiceForm:
    folders = folders_on_server(account)
    return FolderChoiceForm(initial={"folder_mode": account.folder_mode}, folders=folders)


def _folders_response(
    request: HttpRequest, account: EmailAccount, form: FolderChoiceForm, saved: str = "", **extra
) -> HttpResponse:
    context = {
        "folders_form": form,
        "folder_rows": _folder_rows(list(folders_on_server(account)), form),
        "folders_open": True,
        **extra,
    }
    return section_response(
        request, account, anchor="folders", partial=f"{SETTINGS}#folders", context=context,
        saved=saved,
    )  # fmt: skip


@login_required
@require_http_methods(["GET", "POST"])
def account_folders(request: HttpRequest, pk: int) -> HttpResponse:
    """The folder picker. GET shows the folders as saved (it reads only); "Choose
    folders" reads the server's real tree first, as a POST (account_folders_refresh)."""
    account = mailbox_or_404(request.user, pk, MailboxAction.CHANGE_DOWNLOAD)
    if request.method == "GET":
        return _folders_response(request, account, _saved_form(account))
    form = FolderChoiceForm(request.POST, folders=folders_on_server(account))
    if not form.is_valid():
        return _folders_response(request, account, form)
    # Saved and queued for download (sync.services).
    folders_choose(
        account=account,
        actor=request.user,
        mode=form.cleaned_data["folder_mode"],
        chosen=set(form.cleaned_data["chosen"]),
        with_subfolders=set(form.cleaned_data["subfolders"]),
    )
    return _folders_response(
        request, account, _saved_form(account), saved="Folders saved.", folders_saved=True
    )


@login_required
@require_POST
def account_folders_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Choose folders": the server's folder tree read now and saved (a write, hence a
    POST), then the picker."""
    account = mailbox_or_404(request.user, pk, MailboxAction.CHANGE_DOWNLOAD)
    error = ""
    try:
        folders_load(account=account)
    except FolderListError as problem:
        error = str(problem)
    if not request.htmx:
        if error:
            messages.error(request, f"Could not read the folder list from the server: {error}")
        return redirect(reverse("accounts:folders", args=[account.pk]))
    return _folders_response(
        request, account, _saved_form(account), folders_error=error, folders_fresh=not error
    )
