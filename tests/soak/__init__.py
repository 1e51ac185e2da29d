"""`make soak`: three replicas on PostgreSQL for SOAK_MINUTES (20) under faults, with the
figures a long run must keep: no duplicates, nothing stuck, memory and file descriptors
flat, and how soon firing alerts are acted upon. Not part of `make test`."""
