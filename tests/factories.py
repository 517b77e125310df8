import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from providers.models import EmailProvider, ProviderDomain, Security, Source

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def permissions(self, create, extracted, **kwargs):
        for codename in extracted or []:
            app_label, code = codename.split(".")
            self.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=code)
            )
        self.save()


class EmailProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EmailProvider

    name = factory.Sequence(lambda n: f"Provider {n}")
    imap_host = factory.Sequence(lambda n: f"imap.provider{n}.test")
    imap_port = 993
    imap_security = Security.SSL_TLS
    smtp_host = factory.Sequence(lambda n: f"smtp.provider{n}.test")
    smtp_port = 465
    smtp_security = Security.SSL_TLS
    source = Source.ADMIN


class ProviderDomainFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderDomain

    domain = factory.Sequence(lambda n: f"domain{n}.test")
    provider = factory.SubFactory(EmailProviderFactory)
    source = Source.ADMIN


class EmailAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "accounts.EmailAccount"
        skip_postgeneration_save = True

    owner = factory.SubFactory(UserFactory)
    provider = factory.SubFactory(EmailProviderFactory)
    address = factory.Sequence(lambda n: f"mailbox{n}@example.test")
    login = factory.LazyAttribute(lambda a: a.address)

    @factory.post_generation
    def password(self, create, extracted, **kwargs):
        self.set_password(extracted or "secret")
        if create:
            self.save()


class GroupFactory(factory.django.DjangoModelFactory):
    """A role."""

    class Meta:
        model = Group
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Role {n}")

    @factory.post_generation
    def members(self, create, extracted, **kwargs):
        for member in extracted or []:
            member.groups.add(self)


class MailboxGrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "sharing.MailboxGrant"

    account = factory.SubFactory(EmailAccountFactory, shared_access=True)


def claim_taken_by_another_run(account_id: int, connection=None) -> None:
    """Another run takes the mailbox's sync claim for an hour, as a second worker would
    once the first one's lease ran out (through the given connection, when the caller
    is inside one of its own)."""
    from django.db import connection as default

    with (connection or default).cursor() as cursor:
        cursor.execute(
            "UPDATE sync_mailboxsync SET claim_token = 'other-run', "
            "claimed_until = now() + interval '1 hour' WHERE account_id = %s",
            [account_id],
        )
