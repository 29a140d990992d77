"""API keys: machine credentials that act as their owner within scopes."""
