from django.urls import path

from .views import credentials, folders, mailboxes, oauth, settings, signature, wizard

app_name = "accounts"

urlpatterns = [
    path("email/", mailboxes.email_page, name="email"),
    path("mailboxes/", mailboxes.mailbox_list, name="list"),
    path("mailboxes/new/", wizard.wizard_address, name="wizard_address"),
    path("mailboxes/new/provider/", wizard.wizard_provider, name="wizard_provider"),
    path("mailboxes/new/server/", wizard.wizard_new_server, name="wizard_new_server"),
    path("mailboxes/new/sign-in/", wizard.wizard_sign_in, name="wizard_sign_in"),
    path("mailboxes/new/oauth/", oauth.wizard_oauth_start, name="wizard_oauth_start"),
    path("mailboxes/oauth/callback/", oauth.wizard_oauth_callback, name="oauth_callback"),
    path("mailboxes/<int:pk>/", settings.account_settings, name="settings"),
    path("mailboxes/<int:pk>/folders/", folders.account_folders, name="folders"),
    path(
        "mailboxes/<int:pk>/folders/refresh/",
        folders.account_folders_refresh,
        name="folders_refresh",
    ),
    path("mailboxes/<int:pk>/credentials/", credentials.account_credentials, name="credentials"),
    path("mailboxes/<int:pk>/reconnect/", oauth.account_reconnect_start, name="reconnect"),
    path("mailboxes/<int:pk>/move/", oauth.account_move_start, name="move"),
    path("mailboxes/<int:pk>/remove/", settings.account_remove_view, name="remove"),
    path("mailboxes/<int:pk>/signature/", signature.account_signature, name="signature"),
    path(
        "mailboxes/<int:pk>/signature/preview/",
        signature.account_signature_preview,
        name="signature_preview",
    ),
    path(
        "mailboxes/<int:pk>/settings/<slug:section>/",
        settings.account_settings_save,
        name="settings_save",
    ),
    path(
        "notifications/<int:pk>/dismiss/",
        mailboxes.dismiss_notification,
        name="dismiss_notification",
    ),
    path("help/secure-connection/", wizard.secure_connection_help, name="secure_connection"),
]
