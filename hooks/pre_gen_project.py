"""Before cookiecutter writes anything: when it regenerates a project in place, print the plan
and stop, writing nothing, if a file it would replace was edited by hand.

Thin by design: the work is done by blueprint_schema in the template's own checkout. The
rendered cookiecutter context arrives here as JSON data, inside a string literal.
"""

import json
import sys

TEMPLATE_DIR = {{ cookiecutter.__template_dir | tojson }}
CONTEXT = json.loads({{ cookiecutter | tojson | tojson }})

sys.path.insert(0, TEMPLATE_DIR)

from blueprint_schema.hook import check_before_writing  # noqa: E402

sys.exit(check_before_writing(".", CONTEXT, TEMPLATE_DIR))
