"""Run django-q2's worker cluster (``qcluster``) so that it stops as one: see jobs.cluster."""

from django.core.management import call_command
from django.core.management.base import BaseCommand

from jobs import cluster


class Command(BaseCommand):
    help = (
        "Start the worker cluster (django-q2's qcluster) so that its sentinel and workers die with their "
        "leader: use it in place of qcluster. SIGTERM stops it cleanly, as qcluster."
    )

    def add_arguments(self, parser):
        parser.add_argument("-n", "--name", dest="cluster_name", default=None, help="Cluster (queue) name.")

    def handle(self, *args, cluster_name=None, **options):
        cluster.become_leader()
        call_command("qcluster", cluster_name=cluster_name)
