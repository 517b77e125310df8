from django.urls import path

from . import views

app_name = "crm"

urlpatterns = [
    path("contacts/<int:pk>/", views.contact_detail, name="contact"),
    path("companies/<int:pk>/", views.company_detail, name="company"),
]
