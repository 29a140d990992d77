"""`python -m bench.http [--duration 15s] [--connections 32] [--workers N] ...`"""

from bench.http.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
