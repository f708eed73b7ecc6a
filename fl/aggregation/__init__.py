"""Aggregation functionalities: how the data owners' updates become one average.

registry.py names them; base.py holds the stages every one runs; one module per protocol.
"""
