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
    # Only a deletion that began at this grant's own grantee: a mailbox deleted with its
    # grants (its owner deleted, say) has its own trail, and the grantee is still there.
    grantee = instance.user_id if instance.user_id else instance.group_id
    model = get_user_model() if instance.user_id else Group
    if isinstance(origin, QuerySet):
        if origin.model is not model or not origin.filter(pk=grantee).exists():
            return
    elif type(origin) is not model or origin.pk != grantee:
        return
    GrantChange.objects.create(
        account_id=instance.account_id,
        address=instance.account.address,
        actor=None,
        grantee=f"{instance.grantee_label}, deleted",
        before=instance.rights_label,
        after=rights_label(set()),
    )
