"""Gatehouse: `create_app(settings)` is the only way an application comes to life.

The application is composed in `webapp.factory` (the composition root), whose `create_app` also
takes the jobs package's settings; this one leaves them to the environment along with `settings`,
or to their defaults when `settings` is given. This file stays light on purpose: Python runs it
before any `webapp.<module>` it imports, and the root imports everything, the `jobs` package
included, which imports `webapp.<module>`s in turn.
"""

from __future__ import annotations

from flask import Flask

from webapp.config import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the application from `settings` (default: the process environment, for the jobs
    settings too)."""
    from webapp.factory import create_app as build  # on first use: see the module's docstring

    return build(settings)
