"""User accounts and their administration."""
