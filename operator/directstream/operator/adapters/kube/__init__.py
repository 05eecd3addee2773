"""Kubernetes: the API client, the Job launcher and the status store."""
