from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from sharing.selectors import emails_for_timeline

from .models import Company, Contact


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
            "emails": Paginator(emails, 50).get_page(request.GET.get("page")),
        },
    )
