"""Flower peer for the fl-testbed benchmark; runs in `.venv-flower`, never imported by `fl`."""
