"""Cross-cutting HTTP conventions shared by every blueprint."""
