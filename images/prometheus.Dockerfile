# Prometheus for the monitoring stack: Debian's build (unpacked on the host by
# scripts/fetch-prometheus.sh), so it needs no registry; BASE as for the players.
ARG BASE=python:3.11-slim
FROM ${BASE}
COPY build/prometheus/prometheus build/prometheus/promtool /usr/local/bin/
COPY images/prometheus-entrypoint.sh /usr/local/bin/fl-prometheus-entrypoint
RUN mkdir -p /prometheus /etc/prometheus && chown 65534:65534 /prometheus
EXPOSE 9090
# starts as root only to hand Prometheus its TLS identity; Prometheus itself runs as nobody
ENTRYPOINT ["fl-prometheus-entrypoint"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=0.0.0.0:9090"]
