"""`fl bench`: what secure aggregation costs next to plaintext, on one cluster, in one run."""
