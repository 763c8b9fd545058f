"""The leaderboard router: HTTP API in front of the score-range shards."""
