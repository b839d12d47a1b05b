"""The node as a running program: listeners, the protocol, workers, admin, settings and metrics."""
