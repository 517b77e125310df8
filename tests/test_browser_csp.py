"""The Content-Security-Policy in Chromium (issue 15, point 8): the Email page and an
email's page carry it, the sanitised email still shows in its sandboxed frame (styles,
inline images, remote images once asked for), htmx still swaps, and nothing on the way
is refused. tests/browser.py fails any browser test whose pages report a violation;
the last test here shows that it catches one."""

from playwright.sync_api import expect

from sync.models import Email
from sync.sanitize import safe_html
from tests.browser import CSP_VIOLATIONS
from tests.factories import EmailAccountFactory
from tests.test_browser_wizard import _sign_in
from tests.test_signatures import PNG


def _policy(response) -> dict[str, str]:
    header = response.headers["content-security-policy"]
    return dict([*part.split(None, 1), ""][:2] for part in header.split("; "))


def _remote(live_server) -> str:
    # Another origin than the page's, on this machine: nothing leaves it.
    return f"{live_server.url.replace('localhost', '127.0.0.1')}/static/admin/img/icon-yes.svg"


def _email_with_html(account, live_server) -> Email:
    remote = _remote(live_server)
    html, _ = safe_html(
        '<p style="color: rgb(200, 0, 0); font-weight: bold">Hello from CSP</p>'
        f'<p><img src="data:image/png;base64,{PNG}" alt="inline"></p>'
        f'<p><img src="{remote}" alt="remote"></p>'
        "<script>document.title = 'ran'</script>"
    )
    return Email.objects.create(
        account=account, message_key="csp-1", subject="CSP check", from_address="a@b.test",
        html_body=html,
    )  # fmt: skip


def test_it_serves_the_email_page_and_the_email_frame_under_the_policy(live_server, page):
    assert "localhost" in live_server.url
    account = EmailAccountFactory()
    email = _email_with_html(account, live_server)
    _sign_in(page, live_server, account.owner)

    response = page.goto(f"{live_server.url}/email/")
    policy = _policy(response)
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert "'unsafe-inline'" not in policy["script-src"] and "unsafe-eval" not in str(policy)
    # htmx works under it: the search swaps the list in place.
    page.fill("input[name=q]", "nothing matches this")
    expect(page.locator("#panel-count")).to_contain_text("0 emails")
    page.fill("input[name=q]", "CSP check")
    expect(page.locator("#panel-count")).to_contain_text("1 email")

    response = page.goto(f"{live_server.url}/emails/{email.pk}/")
    policy = _policy(response)
    assert policy["script-src"] == "'self'"
    assert policy["style-src-attr"] == "'unsafe-inline'"  # the frame's sanitised styles
    assert "http:" not in policy["img-src"]  # remote images held back
    frame = page.frame_locator("iframe.email-body")
    greeting = frame.locator("p", has_text="Hello from CSP")
    expect(greeting).to_have_text("Hello from CSP")
    assert greeting.evaluate("e => getComputedStyle(e).color") == "rgb(200, 0, 0)"
    assert frame.locator("img[alt=inline]").evaluate("e => e.complete && e.naturalWidth") == 1
    assert frame.locator("img[alt=remote]").get_attribute("src") is None
    assert page.title() != "ran"

    page.click("text=Show images")
    page.wait_for_url("**/?images=1")
    remote = page.frame_locator("iframe.email-body").locator("img[alt=remote]")
    expect(remote).to_have_attribute("src", _remote(live_server))
    loaded = remote.evaluate(
        "e => e.complete ? e.naturalWidth : new Promise(done => {"
        " e.addEventListener('load', () => done(e.naturalWidth));"
        " e.addEventListener('error', () => done(0)); })"
    )
    assert loaded > 0


def test_it_fails_a_browser_test_that_breaks_the_policy(live_server, page):
    """The listener in tests/browser.py sees what Chromium refuses, in a page and in a
    frame (the check is then cleared, so this test itself passes)."""
    page.goto(f"{live_server.url}/login/")
    page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.ran = true";
            document.body.append(script);
            const frame = document.createElement("iframe");
            frame.srcdoc = '<p style="color: red">inherits the policy</p>';
            document.body.append(frame);
        }"""
    )
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.ran") is None
    assert any("inline script" in found for found in CSP_VIOLATIONS), CSP_VIOLATIONS
    assert any("inline style" in found for found in CSP_VIOLATIONS), CSP_VIOLATIONS
    CSP_VIOLATIONS.clear()
