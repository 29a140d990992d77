"""What the tests share: helpers and fixtures, one module per concern.

Test modules import from here and nowhere else in `tests`; the root conftest registers the fixture
modules (`pytest_plugins`), so a fixture is used by naming it, as before.
"""
