"""Control endpoint: /metrics, /status, /healthz on loopback."""
