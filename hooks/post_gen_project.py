"""Add the blueprint-determined files to the project cookiecutter just rendered.

Thin by design: the work is done by blueprint_schema in the template's own checkout (wherever
cookiecutter cloned it). The blueprint was read and checked once, before anything was written;
its normalised model arrives here in the rendered context, as JSON data inside a string literal.
"""

import json
import sys

TEMPLATE_DIR = {{ cookiecutter.__template_dir | tojson }}
CONTEXT = json.loads({{ cookiecutter | tojson | tojson }})

sys.path.insert(0, TEMPLATE_DIR)

from blueprint_schema.hook import generate_into  # noqa: E402

sys.exit(generate_into(".", CONTEXT, TEMPLATE_DIR))
