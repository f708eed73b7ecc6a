"""Distributed differential privacy inside secure aggregation: owners clip and noise, the sum alone is revealed.

`mechanism.py` says what each owner does to its update before sharing (the Skellam mechanism
in the aggregation's integer lattice); `accountant.py` says what the revealed sums have cost.
"""
