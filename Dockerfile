FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=mailsetup.settings
WORKDIR /app
# The dependencies get a layer of their own, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt
# The whole tree, less what .dockerignore leaves out (local state, secrets, tests): an app
# added to INSTALLED_APPS needs no line here (tests/test_packaging.py checks it).
COPY . .
# The app runs as its own user, who must be able to write its state (var/) and the
# media volume (attachments, kept originals): a named volume mounted on /data/media
# starts as a copy of this directory, with its owner.
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --home /app mailsetup \
    && mkdir -p /app/var /data/media \
    && chown mailsetup:mailsetup /app/var /data/media
ENV MEDIA_ROOT=/data/media
USER mailsetup
EXPOSE 8000
# gunicorn reads ./gunicorn.conf.py: its worker timeout, from MAIL_CONNECT_TIMEOUT_SECONDS.
CMD ["gunicorn", "mailsetup.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3"]
