from django.core.management.base import BaseCommand, CommandError
from tenancy.models import Organization

from audit.services import verify_chain


class Command(BaseCommand):
    help = "Check every organization's audit hash chain; exits non-zero if any event was edited, deleted or reordered."

    def add_arguments(self, parser):
        parser.add_argument("--org", help="only this organization (slug)")

    def handle(self, *args, org=None, **options):
        orgs = Organization.objects.all()
        if org:
            orgs = orgs.filter(slug=org)
            if not orgs.exists():
                # A mistyped slug in a cron job must not pass as "nothing wrong".
                raise CommandError(f"No organization with the slug {org!r}.")
        broken = 0
        for organization in orgs:
            problems = verify_chain(organization)
            if problems:
                broken += 1
                self.stdout.write(self.style.ERROR(f"{organization.slug}: chain broken"))
                for problem in problems:
                    self.stdout.write(f"  - {problem}")
            else:
                self.stdout.write(f"{organization.slug}: {organization.audit_head_seq - organization.audit_base_seq} events, intact")
        if broken:
            raise CommandError(f"{broken} organization(s) with a broken audit chain")
