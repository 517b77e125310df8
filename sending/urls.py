from django.urls import path

from . import views

app_name = "sending"

urlpatterns = [
    path("compose/", views.compose, name="compose"),
    path("outgoing/<int:pk>/", views.outgoing_detail, name="outgoing"),
]
