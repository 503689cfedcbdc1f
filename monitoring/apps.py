from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring and on-call"

    def ready(self) -> None:
        # jobs never imports monitoring: finished runs and the executor's alerts reach it through
        # jobs.hooks (docs/architecture.md).
        from governance import db_statistics
        from jobs import hooks
        from notifications import delivery

        from . import escalation, incidents, job_page, listeners, loop, rule_step

        hooks.add_run_finished_listener(listeners.run_finished)
        hooks.add_alert_listener(listeners.alert_raised)
        hooks.add_job_page_part(job_page.add_alert_rules)
        # In this order each cycle: rules raise or clear alerts, incidents escalate, then what they
        # queued is delivered.
        loop.add_step("alert_rules", rule_step.evaluate_rules)
        loop.add_step("resolve_recovered", incidents.resolve_recovered)
        loop.add_step("escalation", escalation.escalate)
        loop.add_step("notifications", delivery.deliver_step)
        # SQLite only: its planner statistics, at start and once a day.
        loop.add_step("db_statistics", db_statistics.refresh)
