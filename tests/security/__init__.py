"""Attack tests for the findings of security issue #10, one module per finding."""
