"""Stream the audit trail as CSV or JSON Lines to stdout or a file; the export itself is audited."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from governance import export
from governance.actors import SYSTEM
from governance.models import AuditEvent, Tenant


class Command(BaseCommand):
    help = "Export audit events (all tenants, or one with --tenant) filtered by time, actor, action and object."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=list(export.FORMATS), default="csv")
        parser.add_argument("--since", help="ISO 8601 date or date-time (inclusive)")
        parser.add_argument("--until", help="ISO 8601 date or date-time (inclusive)")
        parser.add_argument("--actor", help="username of the actor")
        parser.add_argument("--action", help="action, or several separated by commas")
        parser.add_argument("--object", help="the object as TYPE:ID (job:42, jobs.job:42), or a type alone")
        parser.add_argument("--object-type", help="instead of --object: the type (job or jobs.job)")
        parser.add_argument("--object-id", help="with --object-type: the object's id")
        parser.add_argument("--tenant", help="tenant slug (default: every tenant and platform events)")
        parser.add_argument("--output", "-o", help="file to write (default: standard output)")

    def handle(self, *args, **options):
        keys = ("format", "since", "until", "actor", "action", "object", "object_type", "object_id")
        params = {key: options[key] for key in keys if options[key]}
        try:
            filters = export.parse_filters(params)
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
            ) from None
        queryset = AuditEvent.objects.all()
        chains = export.all_chain_ids()
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant with slug {options['tenant']!r}.")
            queryset = queryset.filter(tenant=tenant)
            chains = [tenant.pk]
        export.record_export(actor=SYSTEM, tenant_ids=chains, filters=filters, surface="manage.py export_audit")
        queryset = export.filter_events(queryset, filters)
        written = 0
        if options["output"]:
            with open(options["output"], "w", newline="", encoding="utf-8") as out:
                for chunk in export.stream(queryset, filters["format"]):
                    out.write(chunk)
                    written += len(chunk)
            self.stderr.write(f"export_audit: wrote {written} characters to {options['output']}")
        else:
            for chunk in export.stream(queryset, filters["format"]):
                self.stdout.write(chunk, ending="")
