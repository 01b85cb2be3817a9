"""Checks a generated service by running it: static tools, then real Gunicorn and HTTP."""
