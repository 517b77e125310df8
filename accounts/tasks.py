from celery import shared_task

from .services import RevocationPending, revocations_due, tokens_revoke


# Takes only the mailbox's id: the token stays encrypted in the database until the
# provider has been asked (accounts.models.TokenRevocation).
@shared_task(
    name="accounts.revoke_tokens",
    ignore_result=True,
    acks_late=True,
    autoretry_for=(RevocationPending,),
    retry_backoff=60,
    retry_backoff_max=60 * 60,
    retry_jitter=True,
    max_retries=10,
)
def revoke_tokens(account_id: int) -> None:
    tokens_revoke(account_id=account_id)


@shared_task(name="accounts.revocations_sweep", ignore_result=True)
def revocations_sweep() -> None:
    from mailsetup.queue import publish

    for account_id in revocations_due():
        if not publish(revoke_tokens, account_id):
            return
