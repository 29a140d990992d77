"""Audit trail of security-relevant actions."""
