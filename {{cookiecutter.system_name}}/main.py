"""WSGI entry point: `gunicorn -c gunicorn.conf.py main:app`."""

import sys

from app import create_app
from app.settings import ConfigError

try:
    app = create_app()
except ConfigError as error:
    print(f"configuration error: {error}", file=sys.stderr)
    sys.exit(4)
