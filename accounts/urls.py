from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("email/", views.email_page, name="email"),
    path("mailboxes/", views.mailbox_list, name="list"),
    path("mailboxes/new/", views.wizard_address, name="wizard_address"),
    path("mailboxes/new/provider/", views.wizard_provider, name="wizard_provider"),
    path("mailboxes/new/server/", views.wizard_new_server, name="wizard_new_server"),
    path("mailboxes/new/sign-in/", views.wizard_sign_in, name="wizard_sign_in"),
    path("mailboxes/new/oauth/", views.wizard_oauth_start, name="wizard_oauth_start"),
    path("mailboxes/oauth/callback/", views.wizard_oauth_callback, name="oauth_callback"),
    path("mailboxes/<int:pk>/", views.account_settings, name="settings"),
    path("mailboxes/<int:pk>/folders/", views.account_folders, name="folders"),
    path(
        "mailboxes/<int:pk>/folders/refresh/", views.account_folders_refresh, name="folders_refresh"
    ),
    path("mailboxes/<int:pk>/credentials/", views.account_credentials, name="credentials"),
    path("mailboxes/<int:pk>/reconnect/", views.account_reconnect_start, name="reconnect"),
    path("mailboxes/<int:pk>/remove/", views.account_remove_view, name="remove"),
    path("mailboxes/<int:pk>/signature/", views.account_signature, name="signature"),
    path(
        "mailboxes/<int:pk>/signature/preview/",
        views.account_signature_preview,
        name="signature_preview",
    ),
    path(
        "mailboxes/<int:pk>/settings/<slug:section>/",
        views.account_settings_save,
        name="settings_save",
    ),
    path(
        "notifications/<int:pk>/dismiss/", views.dismiss_notification, name="dismiss_notification"
    ),
    path("help/secure-connection/", views.secure_connection_help, name="secure_connection"),
]
