"""Dispatch: from a decided incident to one request at the gateway: guardrails, the claim
committed before the send, the result committed after it."""
