from django.urls import reverse


def test_it_explains_app_passwords_for_each_provider_with_their_links(client, db):
    page = client.get(reverse("accounts:secure_connection"))
    assert page.status_code == 200
    for provider, link in [
        ("AOL Mail", "https://help.aol.com/articles/Create-and-manage-app-password"),
        ("Gmail / Google Workspace", "https://support.google.com/accounts/answer/185833"),
        ("Yahoo Mail", "https://help.yahoo.com/kb/SLN15241.html"),
        ("Zoho Mail", "https://www.zoho.com/mail/help/adminconsole/two-factor-authentication.html"),
        ("Outlook.com / Microsoft 365", "https://support.microsoft.com/"),
        ("iCloud Mail", "https://support.apple.com/en-us/102654"),
    ]:
        assert f"<h2>{provider}</h2>" in page.text
        assert link in page.text
    assert "two-step verification" in page.text.lower() or "2-step verification" in page.text
