# Prometheus for the monitoring stack: Debian's build (unpacked on the host by
# scripts/fetch-prometheus.sh), so it needs no registry; BASE as for the players.
ARG BASE=python:3.11-slim
FROM ${BASE}
COPY build/prometheus/prometheus build/prometheus/promtool /usr/local/bin/
RUN mkdir -p /prometheus /etc/prometheus && chown 65534:65534 /prometheus
USER 65534
EXPOSE 9090
ENTRYPOINT ["prometheus", "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", \
            "--web.listen-address=0.0.0.0:9090"]
