"""The ``devops-agent`` command line: argument parsing, commands and their renderings."""

from agent.cli.main import main

__all__ = ["main"]
