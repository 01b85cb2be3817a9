# Sourced by the scripts beside it: a virtualenv in .venv with the repo's requirements.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
(cd "$root" && "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt)
export PATH="$venv/bin:$PATH"
