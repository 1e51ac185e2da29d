"""Guardrails: the rules that stand between a decision and an action."""
