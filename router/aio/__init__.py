"""asyncio building blocks: coalescing, circuit breakers, periodic jobs."""
