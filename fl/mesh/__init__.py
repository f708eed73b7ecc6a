"""The trust boundary: a cluster CA (`pki`), who may call which TF method (`policy`), and the per-player
TLS sidecar (`haproxy` renders its configuration, `sidecar` starts it)."""
