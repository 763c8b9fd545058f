"""asyncio building blocks."""
