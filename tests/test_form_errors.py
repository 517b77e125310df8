"""A form sent back with mistakes: each input's aria-describedby names elements that are
on the page (its error, its help), and the first field with a mistake has the focus
(autofocus, honoured by a page load and by htmx's swap), not the form's first field."""

import re
from html.parser import HTMLParser
from urllib.parse import urlencode

from django.urls import reverse

from tests.factories import EmailAccountFactory, UserFactory

HTMX = {"HTTP_HX_REQUEST": "true"}


class _Page(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}  # id: its text
        self.described: dict[str, list[str]] = {}  # element id: the ids it names
        self.focused: list[str] = []
        self._open: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids[attrs["id"]] = ""
            self._open.append(attrs["id"])
        if attrs.get("aria-describedby"):
            self.described[attrs.get("id", tag)] = attrs["aria-describedby"].split()
        if "autofocus" in attrs:
            self.focused.append(attrs.get("id", tag))

    def handle_data(self, data):
        for element in self._open:
            self.ids[element] += data

    def handle_endtag(self, tag):
        if tag in ("div", "small") and self._open:
            self._open.pop()


def _checked(response, *, focused: str, error: str) -> _Page:
    assert response.status_code == 200, response.status_code
    page = _Page(response.content.decode())
    missing = {
        element: [name for name in names if name not in page.ids]
        for element, names in page.described.items()
    }
    assert {element: names for element, names in missing.items() if names} == {}
    assert page.focused == [focused]
    assert error in page.ids[f"{focused}_error"]
    assert f"{focused}_error" in page.described[focused]
    return page


def test_it_ties_the_address_step_s_error_to_its_field(client, db):
    client.force_login(UserFactory())
    response = client.post(reverse("accounts:wizard_address"), {"address": "alice.example.test"})
    _checked(response, focused="id_address", error="@")


def test_it_ties_a_refused_password_to_its_field(client, db, test_provider):
    client.force_login(UserFactory())
    url = reverse("accounts:wizard_sign_in")
    query = urlencode({"address": "alice@example.test", "provider": test_provider.pk})
    response = client.post(f"{url}?{query}", {"password": "wrong-password"}, **HTMX)
    _checked(response, focused="id_password", error="did not accept the login or password")


def test_it_focuses_the_first_wrong_field_of_a_new_server_and_shows_its_help(client, db):
    client.force_login(UserFactory(permissions=["providers.manage_email_providers"]))
    url = f"{reverse('accounts:wizard_new_server')}?{urlencode({'address': 'c@elsewhere.test'})}"
    data = {
        "name": "Elsewhere Mail", "service_type": "imap_smtp", "receive_enabled": "on",
        "send_enabled": "on", "imap_host": "", "imap_security": "ssl", "imap_port": "993",
        "smtp_host": "smtp.elsewhere.test", "smtp_security": "starttls", "smtp_port": "587",
        "exchange_url": "", "login_format": "email",
    }  # fmt: skip
    page = _checked(client.post(url, data, **HTMX), focused="id_imap_host", error="IMAP server")
    # The help the admin's form shows is on the wizard's too, where the inputs point.
    assert "%EMAILDOMAIN%" in page.ids["id_imap_host_helptext"]
    assert "autodiscover" in page.ids["id_exchange_url_helptext"]


def test_it_focuses_the_wrong_recipient_of_an_email(client, db):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    data = {"sender": account.pk, "to": "peter@", "subject": "Hi", "body": "Hello"}
    response = client.post(reverse("sending:compose"), data, **HTMX)
    _checked(response, focused="id_to", error="To:")


def test_it_ties_a_refused_password_on_the_settings_page_to_its_field(client, test_provider):
    account = EmailAccountFactory(provider=test_provider, address="alice@example.test")
    client.force_login(account.owner)
    url = reverse("accounts:credentials", args=[account.pk])
    response = client.post(url, {"credentials-password": "wrong-password"}, **HTMX)
    page = _checked(response, focused="id_credentials-password", error="Password: ")
    assert re.search(r"did not accept", page.ids["id_credentials-password_error"])
