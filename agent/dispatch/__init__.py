"""Dispatch: turning a decided action into a gateway request, and reading the answer."""
