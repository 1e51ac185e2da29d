"""Diagnosis: triage, investigation with PromQL tools, a recovery plan; runbook fallback."""
