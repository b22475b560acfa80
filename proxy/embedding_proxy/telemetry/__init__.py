"""What the proxy says about itself: logs, Prometheus metrics, the smoothed autoscaling signal."""
