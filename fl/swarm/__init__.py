"""Docker Swarm: several Docker engines under one manager, the way the testbed spreads over hosts.

`nodes.py` makes Docker-in-Docker nodes on this machine and joins them to a swarm that this
machine's engine manages, so that several engines exist without several hosts.
"""
