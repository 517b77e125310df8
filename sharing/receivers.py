"""Grants that end because their grantee does: a user or role deleted by an
administrator takes its grants with it, each logged like any grant change."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from django.db.models.signals import pre_delete
from django.dispatch import receiver

from .models import GrantChange, MailboxGrant, rights_label


@receiver(pre_delete, sender=MailboxGrant, dispatch_uid="sharing-grant-with-grantee")
def grant_deleted_with_its_grantee(sender, instance: MailboxGrant, origin=None, **kwargs):
    # Only a deletion that began at a user or a role: a mailbox deleted with its grants
    # has its own trail (and a row naming it now would outlive it by nothing).
    started_at = origin.model if isinstance(origin, QuerySet) else type(origin)
    if started_at not in (get_user_model(), Group):
        return
    GrantChange.objects.create(
        account_id=instance.account_id,
        address=instance.account.address,
        actor=None,
        grantee=f"{instance.grantee_label}, deleted",
        before=instance.rights_label,
        after=rights_label(set()),
    )
