"""The accounts app's pages, one module per page family:

- mailboxes: the Email page, the mailbox list, a notification's dismissal;
- wizard: the add-mailbox wizard (address, provider, new server, sign-in) and its help;
- oauth: signing in with OAuth 2.0, for a new mailbox or to reconnect one;
- settings: a mailbox's settings page, its sections' saves and the removal;
- folders, signature, credentials: the settings page's sections with views of their own.

Every view is thin: one access check (sharing.access), then form -> service -> render.
Writes and queued work are the services'; the views never queue a task.
"""
