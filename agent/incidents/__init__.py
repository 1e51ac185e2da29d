"""The incident lifecycle: one typed state machine, pure (``model``, ``lifecycle``).

The daemon gathers a snapshot, calls the step functions, commits what they return in one
transaction (``agent.store``), then runs their effects.
"""
