"""The sweep: ask Prometheus what is wrong right now and turn each answer into a Finding."""
