"""The AI Command Gateway's wire format: the request the agent builds, the answers it reads.

Pure: no I/O here. ``agent.clients.gateway`` sends the request and hands the decoded
answer back to ``response.read_body``.
"""
