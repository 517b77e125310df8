from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from sharing.selectors import activities_for_timeline, emails_for_timeline

from .models import Company, Contact, ContactAddress


@login_required
def contact_detail(request: HttpRequest, pk: int) -> HttpResponse:
    contact = get_object_or_404(Contact.objects.select_related("company"), pk=pk)
    emails = emails_for_timeline(request.user, contact=contact)
    return render(
        request,
        "crm/timeline.html",
        {
            "title": str(contact),
            "subtitle": ", ".join(contact.addresses.values_list("address", flat=True)),
            "company": contact.company,
            "write_to": ", ".join(contact.addresses.values_list("address", flat=True)[:1]),
            "emails": Paginator(emails, 50).get_page(request.GET.get("page")),
            "activities": activities_for_timeline(request.user, contact=contact)[:50],
        },
    )


@login_required
def company_detail(request: HttpRequest, pk: int) -> HttpResponse:
    company = get_object_or_404(Company, pk=pk)
    emails = emails_for_timeline(request.user, company=company)
    return render(
        request,
        "crm/timeline.html",
        {
            "title": company.name,
            "subtitle": company.web_domain,
            "write_to": _company_recipients(company),
            "emails": Paginator(emails, 50).get_page(request.GET.get("page")),
            "activities": activities_for_timeline(request.user, company=company)[:50],
        },
    )


def _company_recipients(company: Company) -> str:
    """Write email from a company's page: to its contacts, one address each."""
    first = {}
    rows = ContactAddress.objects.filter(contact__company=company).order_by("contact_id", "address")
    for contact_id, address in rows.values_list("contact_id", "address")[:200]:
        first.setdefault(contact_id, address)
    return ", ".join(list(first.values())[:20])
