"""gunicorn's settings for the web process (gunicorn reads ./gunicorn.conf.py from its
working directory: the Dockerfile's and docker-compose.yml's web)."""

from mailsetup.env import env_int

# The worker timeout: above the longest request, or gunicorn kills the worker and the
# user sees a bare proxy error. That is the OAuth callback: its code traded for tokens
# (a connect and a read, MAIL_CONNECT_TIMEOUT each), then the sign-in check, which
# waits up to 3 x MAIL_CONNECT_TIMEOUT for IMAP and again for SMTP; with room for the
# rest of the request. Read from the same setting, so that changing it moves both.
_connect = env_int("MAIL_CONNECT_TIMEOUT_SECONDS", 15, minimum=1)
timeout = (2 + 2 * 3) * _connect + 30
