from audit.admin import ReadOnlyAdmin
from django.contrib import admin

from .models import Certificate


@admin.register(Certificate)
class CertificateAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "organization", "source", "status", "not_after")
    list_filter = ("source", "status")
    exclude = ("key_encrypted",)
