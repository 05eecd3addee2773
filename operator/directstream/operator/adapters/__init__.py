"""Adapters: the only code that talks to Kafka, Kubernetes, files and processes."""
