from playwright.sync_api import expect

from tests.factories import PASSWORD, UserFactory


def _sign_in(page, live_server, user):
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")


def test_it_lists_the_builtin_providers_for_a_manager(live_server, page, builtin_providers):
    manager = UserFactory(is_staff=True, permissions=["providers.manage_email_providers"])
    _sign_in(page, live_server, manager)
    page.click("text=Email providers domains")
    page.fill("#searchbar", "gmx")
    page.press("#searchbar", "Enter")
    expect(page.locator("#result_list tbody tr")).to_have_count(9)
    expect(page.locator("#result_list")).to_contain_text("GMX (gmx.net)")

    page.goto(f"{live_server.url}/admin/providers/emailprovider/")
    listing = page.inner_text("#result_list")
    for name in ["Gmail / Google Workspace", "Microsoft 365", "Yahoo Mail", "Fastmail"]:
        assert name in listing


def test_it_shows_no_providers_to_staff_without_the_permission(
    live_server, page, builtin_providers
):
    staff = UserFactory(is_staff=True)
    _sign_in(page, live_server, staff)
    assert "Email providers" not in page.inner_text("#content")
    response = page.goto(f"{live_server.url}/admin/providers/emailprovider/")
    assert response.status == 403
