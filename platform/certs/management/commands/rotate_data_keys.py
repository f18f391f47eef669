"""Re-encrypt every secret stored in the database under the newest data key."""

from django.core.management.base import BaseCommand

from certs import crypto


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted field (private keys, ACME account keys, the internal CA) with the first key of "
        "PORTICO_DATA_KEYS. Rotate by putting a new key first, running this, then removing the old key."
    )

    def handle(self, *args, **options):
        for field, count in crypto.rotate_all().items():
            self.stdout.write(f"{field}: {count} re-encrypted")
        self.stdout.write(self.style.SUCCESS("Every encrypted field now uses the newest key; older keys can be removed."))
