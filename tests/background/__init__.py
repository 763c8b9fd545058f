"""Background jobs: reconciler, self-healing, seasons."""
