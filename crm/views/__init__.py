"""The CRM side: the Contacts and Companies lists, their pages with the timeline, and an
email's links to them, changed by hand. Who sees which emails, meetings and tasks is
sharing.selectors' decision; contacts and companies themselves are everyone's."""

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from mailsetup.http import search_text
from sharing.access import email_or_404
from sync.links import LinkTargetMissing, email_link_change

from ..models import Company, Contact
from ..selectors import company_recipients, email_links, link_candidates
from ..services import link_target
from .timelines import (
    PAGE_SIZE,
    ListPaginator,
    companies_for_list,
    contacts_for_list,
    page_details,
    timeline,
)


def _list(request: HttpRequest, template: str, model, listed, search: str) -> HttpResponse:
    rows, count = listed
    paginator = ListPaginator(rows, PAGE_SIZE, count=count, bounded=bool(search))
    page = paginator.get_page(request.GET.get("page"))
    page_details(request.user, page, model)
    context = {"page": page, "q": search}
    if request.htmx and request.htmx.target == "crm-list":
        return render(request, f"{template}#list", context)
    return render(request, template, context)


@login_required
def contact_list(request: HttpRequest) -> HttpResponse:
    search = search_text(request)
    listed = contacts_for_list(request.user, search=search)
    return _list(request, "crm/contacts.html", Contact, listed, search)


@login_required
def company_list(request: HttpRequest) -> HttpResponse:
    search = search_text(request)
    listed = companies_for_list(request.user, search=search)
    return _list(request, "crm/companies.html", Company, listed, search)


@login_required
def contact_detail(request: HttpRequest, pk: int) -> HttpResponse:
    contact = get_object_or_404(Contact.objects.select_related("company"), pk=pk)
    addresses = list(contact.addresses.values_list("address", flat=True))
    return render(
        request,
        "crm/timeline.html",
        {
            "contact": contact,
            "title": str(contact),
            "subtitle": ", ".join(addresses),
            "company": contact.company,
            "write_to": ", ".join(addresses[:1]),
            **_timeline(request, contact=contact),
        },
    )


@login_required
def company_detail(request: HttpRequest, pk: int) -> HttpResponse:
    company = get_object_or_404(Company, pk=pk)
    return render(
        request,
        "crm/timeline.html",
        {
            "title": company.name,
            "subtitle": company.web_domain,
            "people": company.contacts.order_by("name", "pk")[:100],
            "write_to": company_recipients(company),
            **_timeline(request, company=company),
        },
    )


def _timeline(request: HttpRequest, **whose) -> dict:
    search = search_text(request)
    after = request.GET.get("after", "")[:100]
    entries = timeline(request.user, after=after, search=search, **whose)
    waiting = 0
    if search:
        from sharing.selectors import mailboxes_on_timelines
        from sync.search import vectors_waiting

        # As the Email page says it: emails of the mailboxes the timeline shows that a
        # search finds by subject and sender only until their vectors are filled.
        waiting = vectors_waiting(mailboxes_on_timelines(request.user))
    return {"entries": entries, "q": search, "waiting": waiting}


def _target(value: str) -> int | None:
    return int(value) if value.isdigit() else None


@login_required
@require_http_methods(["GET", "POST"])
def email_link_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """An email's contacts and companies: GET finds candidates to link (what was typed),
    POST links or unlinks one. Open to whoever may see the email; 404 for anyone else."""
    email = email_or_404(request.user, pk, linking=True)
    query = search_text(request, "link")
    if request.method == "POST":
        action = request.POST.get("action")
        contact_id = _target(request.POST.get("contact", ""))
        company_id = _target(request.POST.get("company", ""))
        if action not in {"link", "unlink"} or (contact_id is None) == (company_id is None):
            return HttpResponseBadRequest("Name one contact or company to link or unlink.")
        try:
            email_link_change(
                email=email, actor=request.user, link=action == "link",
                contact_id=contact_id, company_id=company_id,
            )  # fmt: skip
        except LinkTargetMissing:
            raise Http404 from None
        target = link_target(contact_id=contact_id, company_id=company_id)
        query = ""
        if not request.htmx:
            return redirect(f"{email.get_absolute_url()}#links")
    context = {"email": email, **email_links(email), "link_query": query}
    if request.method == "POST":
        # The button pressed is gone with the swap: the focus goes to this message.
        context["link_done"] = f"{target} {'linked' if action == 'link' else 'unlinked'}."
    if query:
        context["candidates"] = link_candidates(email, query)
    if request.htmx and request.htmx.target == "link-candidates":
        return render(request, "crm/email_links.html#candidates", context)
    if request.htmx:
        return render(request, "crm/email_links.html#links", context)
    return redirect(f"{email.get_absolute_url()}?{urlencode({'link': query})}#links")
