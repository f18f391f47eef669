"""Create the quick start's demo account, organization and site (idempotent)."""

from django.core.management.base import BaseCommand
from django.db import transaction
from edge import services as edge
from edge.models import Hostname
from tenancy import services as tenancy
from tenancy.access import Actor
from tenancy.models import User

from fleet.publisher import publish

EMAIL = "demo@portico.localhost"
PASSWORD = "portico-demo-password"


class Command(BaseCommand):
    help = "Create a demo account with a site demo.localhost served from a local demo origin."

    def handle(self, *args, **options):
        user = User.objects.filter(email=EMAIL).first()
        if user is None:
            # The demo account is also platform staff, so the admin works out of the box.
            user = User.objects.create_superuser(email=EMAIL, password=PASSWORD)
        # Sign-in needs a verified address (allauth); the demo account's is verified up front.
        from allauth.account.models import EmailAddress

        EmailAddress.objects.update_or_create(user=user, email=EMAIL, defaults={"verified": True, "primary": True})
        actor = Actor.for_user(user, user_agent="quickstart")
        org = user.memberships.first().organization if user.memberships.exists() else None
        if org is None:
            org = tenancy.organization_create(actor=actor, name="Demo")
        if not Hostname.objects.filter(name="demo.localhost").exists():
            with transaction.atomic():
                edge.site_create(
                    actor=actor,
                    org=org,
                    name="demo",
                    hostnames=["demo.localhost"],
                    tls_mode="internal",
                    backends=[{"address": "127.0.0.1", "port": 8081}],
                )
        publish(force=True)
        self.stdout.write(
            "\n  Portico is starting.\n"
            "  Dashboard:  http://127.0.0.1:8000/   (admin: http://127.0.0.1:8000/admin/)\n"
            f"  Demo login: {EMAIL} / {PASSWORD}\n"
            "  Demo site:  curl -H 'Host: demo.localhost' http://127.0.0.1:8080/\n"
        )
