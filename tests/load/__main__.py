"""`python -m tests.load [smoke|load|stress|spike|soak] [--start-server] [--duration 30s] ...`"""

from tests.load.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
