"""How to connect a mailbox securely at the providers that refuse plain passwords.

Shown in the wizard next to the password field and, all together, on the page
"Set up a secure mailbox connection".
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Guide:
    key: str
    provider: str
    summary: str
    steps: tuple[str, ...]
    link: str
    link_text: str


GUIDES: dict[str, Guide] = {
    guide.key: guide
    for guide in [
        Guide(
            key="gmail",
            provider="Gmail / Google Workspace",
            # Only what this sign-in offers: an app password over IMAP and SMTP (a Google
            # provider with OAuth 2.0 shows "Sign in with Google" and no guide).
            summary="Google needs an app password for mail programs, not your Google password.",
            steps=(
                "Turn on 2-Step Verification for your Google Account (Security → How you sign in to Google).",
                "Open App passwords, enter a name such as “CRM mail”, and create it.",
                "Copy the 16-character app password and paste it here as the password.",
            ),
            link="https://support.google.com/accounts/answer/185833",
            link_text="Google: Sign in with app passwords",
        ),
        Guide(
            key="outlook",
            provider="Outlook.com / Microsoft 365",
            summary="Microsoft no longer accepts passwords for IMAP and SMTP; these mailboxes "
            "connect with “Sign in with Microsoft” (OAuth 2.0).",
            steps=(
                "Your administrator registers mailsetup as an app in Microsoft Entra ID.",
                "Then choose “Sign in with Microsoft” in this wizard and approve access.",
            ),
            link="https://support.microsoft.com/en-us/office/pop-imap-and-smtp-settings-for-outlook-com-d088b986-291d-42b8-9564-9c414e2aa040",
            link_text="Microsoft: POP, IMAP and SMTP settings for Outlook.com",
        ),
        Guide(
            key="yahoo",
            provider="Yahoo Mail",
            summary="Yahoo needs an app password for mail programs.",
            steps=(
                "Open Yahoo Account Security.",
                "Turn on two-step verification if it is off.",
                "Choose “Generate app password”, name it (for example “CRM”), and create it.",
                "Paste the generated password here.",
            ),
            link="https://help.yahoo.com/kb/SLN15241.html",
            link_text="Yahoo: Generate and manage third-party app passwords",
        ),
        Guide(
            key="aol",
            provider="AOL Mail",
            summary="AOL needs an app password for mail programs.",
            steps=(
                "Open AOL Account Security.",
                "Choose “Generate app password”, pick “Other app”, and name it.",
                "Paste the generated password here.",
            ),
            link="https://help.aol.com/articles/Create-and-manage-app-password",
            link_text="AOL: Create and manage app passwords",
        ),
        Guide(
            key="zoho",
            provider="Zoho Mail",
            summary="With two-factor authentication on, Zoho needs an application-specific "
            "password, and IMAP access must be enabled.",
            steps=(
                "In Zoho Mail settings → Mail Accounts → IMAP, enable IMAP access.",
                "In Zoho Accounts → Security → App Passwords, generate a new password.",
                "Paste the generated password here.",
            ),
            link="https://www.zoho.com/mail/help/adminconsole/two-factor-authentication.html",
            link_text="Zoho: Application-specific passwords",
        ),
        Guide(
            key="icloud",
            provider="iCloud Mail",
            summary="Apple needs an app-specific password for mail programs.",
            steps=(
                "Sign in at account.apple.com and make sure two-factor authentication is on.",
                "Under Sign-In and Security → App-Specific Passwords, generate one.",
                "Paste the generated password here.",
            ),
            link="https://support.apple.com/en-us/102654",
            link_text="Apple: Sign in to apps with your Apple Account using app-specific passwords",
        ),
    ]
}
