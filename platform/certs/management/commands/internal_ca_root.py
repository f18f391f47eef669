"""Print (or write) the internal CA's root certificate, to add to a trust store."""

from pathlib import Path

from django.core.management.base import BaseCommand

from certs.selectors import internal_ca_root_pem


class Command(BaseCommand):
    help = "Print the internal CA's root certificate (PEM), e.g. to trust it: manage.py internal_ca_root -o portico-root.pem"

    def add_arguments(self, parser):
        parser.add_argument("-o", "--output", help="write to this file instead of standard output")

    def handle(self, *args, output=None, **options):
        pem = internal_ca_root_pem()
        if output:
            Path(output).write_text(pem)
            self.stderr.write(
                f"Wrote {output}. To trust it on Debian: cp {output} /usr/local/share/ca-certificates/portico.crt "
                "&& update-ca-certificates"
            )
        else:
            self.stdout.write(pem, ending="")
