"""Security primitives: password hashing and policy, JWT signing keys, single-use tokens."""
