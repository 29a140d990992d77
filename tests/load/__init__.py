"""k6 load tests (k6/*.js) and their runner: `python -m tests.load [scenario] ...`."""
