FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=mailsetup.settings
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mailsetup mailsetup
COPY providers providers
COPY accounts accounts
COPY sync sync
COPY sharing sharing
COPY sending sending
COPY crm crm
COPY systemsettings systemsettings
COPY templates templates
COPY static static
COPY manage.py ./
# The app runs as its own user, who must be able to write its state (var/) and the
# media volume (attachments, kept originals): a named volume mounted on /data/media
# starts as a copy of this directory, with its owner.
RUN pip install --no-cache-dir . \
    && useradd --system --home /app mailsetup \
    && mkdir -p /app/var /data/media \
    && chown mailsetup:mailsetup /app/var /data/media
ENV MEDIA_ROOT=/data/media
USER mailsetup
EXPOSE 8000
CMD ["gunicorn", "mailsetup.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3"]
