"""Authentication: registration, login, tokens, sessions and password flows."""
