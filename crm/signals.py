"""What crm says happened, for the apps above it: crm imports none of them (accounts'
signals are the same pattern)."""

from django.dispatch import Signal

# Addresses were given to contacts outside a download (the admin's pages): sync links
# the emails already downloaded from or to them (`contact_ids`), as a download would
# have, had the contacts been there first.
contacts_addressed = Signal()
