"""Drive pending certificate orders to completion in this process (no Celery needed)."""

from django.core.management.base import BaseCommand

from certs import issuance
from certs.models import Certificate


class Command(BaseCommand):
    help = "Run pending ACME orders now, in this process, and print where each ended (issued, or failed and why)."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", help="certificate ids (default: every pending or validating one)")

    def handle(self, *args, ids=(), **options):
        qs = Certificate.objects.filter(pk__in=ids) if ids else Certificate.objects.filter(status__in=Certificate.IN_FLIGHT)
        for pk in list(qs.values_list("pk", flat=True)):
            cert = issuance.run(pk)
            detail = cert.failure_reason or (f"valid until {cert.not_after:%Y-%m-%d}" if cert.not_after else cert.progress)
            self.stdout.write(f"{cert.id} {', '.join(cert.hostnames)}: {cert.status}. {detail}")
