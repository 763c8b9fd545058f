"""Jobs every router runs beside the requests: reconciler, layout watcher, season keeper, self-healing."""
