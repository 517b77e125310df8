"""New emails on an open page without a reload (issue 18, point 5).

A page that lists emails (the Email page, a contact's or a company's timeline) or shows a
mailbox's status (its settings page) holds a small poller (`{% new_emails_poller %}`,
sync/templatetags/live.py) carrying the id of the newest email stored anywhere when it
was drawn, and which list it watches. Every few seconds htmx asks `new_emails` (a page:
sync/views.py) with that id:

- nothing stored since: 204, and htmx leaves the page alone. One query, an index's last
  entry, whatever the number of emails: an idle open page costs that and its session.
- emails stored since, none of them the user's to see here: the poller comes back with
  the newer id (so the next question looks past them), and nothing else changes.
- some of them are: the same, and the response triggers `new-emails` on the page; the
  list listens for it and reloads itself through its own view (the same keyset query as
  the page's first load), and so do the mailboxes' statuses. What "the user's to see
  here" means is the page's own rule: the Email page's mailboxes, the timeline's, or the
  one mailbox whose status the user may see (sharing.selectors), checked on the few
  emails stored since. Reloading the list, rather
  than inserting rows, keeps its order by date (a new email may be older than those
  shown: a first download, a delayed message), its count, and an email whose batch
  committed after a later one's: it shows with the next arrival.

The ids are the emails' own, shown in their addresses already; nothing else leaves.
"""

from .models import Email

# Seconds between two questions of an open page.
POLL_SECONDS = 3


def newest_email_id() -> int:
    """The newest email's id, anyone's: the primary key index's last entry."""
    return Email.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
