"""An MCP server: an engineer's assistant asks the agent what it did, why, and what waits.

The agent's records (incidents, decisions, evidence, gateway exchanges, approvals that
wait) are served to assistants over the Model Context Protocol, as text in which
everything that came from alerts, logs, peers or a model sits inside delimited blocks
marked untrusted. The same server runs over stdio (``devops-agent mcp``) and at ``/mcp``
on ``METRICS_ADDR`` (streamable HTTP, behind ``CONSOLE_TOKEN`` or ``APPROVAL_TOKEN``).

Layout: ``catalogue.py`` (the tools' names, descriptions and argument schemas),
``args.py`` (argument checks), ``render.py`` (what answers say), ``tools.py`` (one call,
whatever the transport), ``desk.py`` (reading the store and answering: the daemon's, or a
process of its own), ``report.py`` (the ``report`` tool's text), and the transports:
``server.py`` (the SDK), ``stdio.py`` and ``http.py``. Only ``server.py`` and
``stdio.py`` import the SDK, and nothing imports them until a server is asked for: a
daemon nobody asks over MCP never loads it.
"""
