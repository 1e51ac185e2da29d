"""The incident store: what the agent saw, decided and did, kept across restarts."""
