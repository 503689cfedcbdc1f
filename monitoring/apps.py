from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring and on-call"

    def ready(self) -> None:
        # jobs never imports monitoring: finished runs and the executor's alerts reach it through
        # jobs.hooks (docs/architecture.md).
        from jobs import hooks
        from notifications import delivery

        from . import escalation, listeners, loop

        hooks.add_run_finished_listener(listeners.run_finished)
        hooks.add_alert_listener(listeners.alert_raised)
        # In this order each cycle: incidents escalate, then what they queued is delivered.
        loop.add_step("escalation", escalation.escalate)
        loop.add_step("notifications", delivery.deliver_step)
