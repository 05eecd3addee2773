"""Local mode: executor processes and the state file."""
