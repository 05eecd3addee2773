"""directstream."""
