"""IMAP for reading and SMTP for sending (imapclient, smtplib)."""
