"""Hosts of the one driver loop: local mode (a file, exit codes) and the operator (the live
object, conditions)."""
