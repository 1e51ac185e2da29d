"""The daemon: schedule, lifecycle, incidents, verification, escalation, systemd."""
