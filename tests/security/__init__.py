"""Attack tests: one module per threat, each running the attack against the real service and
naming the OWASP ASVS 4.0.3 requirements it holds the service to."""
