"""The core: write pipeline, page cache, exact reads."""
