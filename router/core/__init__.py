"""Use cases and their logic: recording scores, ranking reads, the write pipeline,
caches, rate limits. Imports nothing from FastAPI."""
