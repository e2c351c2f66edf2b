"""What an operator sees of a server: Prometheus metrics, the measured store and structured logs."""
