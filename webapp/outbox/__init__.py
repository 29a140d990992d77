"""Transactional outbox for email notifications."""
