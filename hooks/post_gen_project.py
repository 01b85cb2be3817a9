"""Add the blueprint-determined files to the project cookiecutter just rendered.

Thin by design: the work is done by blueprint_schema in the template's own checkout (wherever
cookiecutter cloned it), and the blueprint was already checked before anything was written.
"""

import json
import sys

TEMPLATE_DIR = {{ cookiecutter.__template_dir | tojson }}
BLUEPRINT_FILE = {{ cookiecutter.__blueprint_file | tojson }}
INLINE_BLUEPRINT = json.loads({{ cookiecutter._blueprint | tojson | tojson }})
SYSTEM_NAME = {{ cookiecutter.system_name | tojson }}

sys.path.insert(0, TEMPLATE_DIR)

from blueprint_schema.hook import generate_into  # noqa: E402

sys.exit(generate_into(".", BLUEPRINT_FILE, INLINE_BLUEPRINT, SYSTEM_NAME))
