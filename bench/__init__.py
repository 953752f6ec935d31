"""facebench: throughput benchmarking harness for InsightFace models."""

__version__ = "0.1.0"
