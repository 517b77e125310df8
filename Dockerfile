FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=mailsetup.settings
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mailsetup mailsetup
COPY providers providers
COPY accounts accounts
COPY sync sync
COPY sharing sharing
COPY crm crm
COPY systemsettings systemsettings
COPY templates templates
COPY static static
COPY manage.py ./
RUN pip install --no-cache-dir . \
    && useradd --system --home /app mailsetup \
    && mkdir -p /app/var && chown mailsetup /app/var
USER mailsetup
EXPOSE 8000
CMD ["gunicorn", "mailsetup.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3"]
