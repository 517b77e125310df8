from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet

from providers.models import EmailProvider

from .guides import GUIDES, Guide
from .models import AccountNotification, EmailAccount

MANAGE_PROVIDERS = "providers.manage_email_providers"


def accounts_for_user(user) -> QuerySet[EmailAccount]:
    """The mailboxes the user owns and has not removed. Who may do what with any
    mailbox, shared ones included, is decided in sharing.selectors."""
    return EmailAccount.objects.filter(owner=user, removed_at__isnull=True).select_related(
        "provider"
    )


def open_notifications(user) -> QuerySet[AccountNotification]:
    return AccountNotification.objects.filter(
        account__owner=user, dismissed_at__isnull=True
    ).select_related("account")


def providers_matching(query: str) -> QuerySet[EmailProvider]:
    providers = EmailProvider.objects.all()
    query = query.strip()
    if query:
        providers = providers.filter(
            Q(name__icontains=query) | Q(domains__domain__icontains=query)
        ).distinct()
    return providers


def provider_managers() -> list:
    """Who a user can ask to add a mail server: holders of the manage permission."""
    users = get_user_model().objects.with_perm(MANAGE_PROVIDERS).filter(is_active=True)
    return list(users.order_by("last_name", "username")[:5])


def guide_for(provider: EmailProvider) -> Guide | None:
    return GUIDES.get(provider.security_guide)
