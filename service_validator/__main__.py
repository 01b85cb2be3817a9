"""python -m service_validator PROJECT"""

import sys

from .cli import main

sys.exit(main())
