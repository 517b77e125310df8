"""Every conversation with a mail server: the backends (IMAP/SMTP, Exchange EWS), their
errors and the trust they share. A plain package, not a Django app: no models."""
