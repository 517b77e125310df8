from django.urls import path

from . import views

app_name = "sending"

urlpatterns = [
    path("compose/", views.compose, name="compose"),
    path("outgoing/<int:pk>/", views.outgoing_detail, name="outgoing"),
    path("outgoing/<int:pk>/send-again/", views.outgoing_resend_view, name="resend"),
]
