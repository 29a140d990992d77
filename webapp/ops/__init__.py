"""Operational endpoints outside /api/v1: health, readiness, JWKS and the docs assets."""
