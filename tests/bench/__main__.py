"""`python -m tests.bench [--duration 15s] [--connections 32] [--workers N] ...`"""

from tests.bench.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
