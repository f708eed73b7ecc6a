"""Ways to run the players: `local` (one OS process each) and `docker` (one container each)."""
