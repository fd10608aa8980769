"""One serving broker among several: the leader lock, and serving while holding it."""
