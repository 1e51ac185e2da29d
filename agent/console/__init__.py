"""The operator console: incidents, their evidence as a plot, and approval (``/ui/``)."""
