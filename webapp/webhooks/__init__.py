"""Webhooks: endpoints subscribed to the domain events, and their signed deliveries."""
