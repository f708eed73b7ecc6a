# A Docker-in-Docker node of the testbed's swarm on one machine (fl/swarm/nodes.py): Debian's
# dockerd and iptables for its networks; BASE as for the players. Its images live on a volume
# of its own with overlay2: the volume sits on the host's file system, where the kernel's
# overlay works, whereas fuse-overlayfs inside the node cannot unpack a layer that deletes a file.
ARG BASE=python:3.11-slim
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends docker.io iptables && rm -rf /var/lib/apt/lists/*
VOLUME /var/lib/docker
ENTRYPOINT ["dockerd", "--storage-driver=overlay2"]
