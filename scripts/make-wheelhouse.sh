#!/usr/bin/env bash
# Download every Python package the images need into wheelhouse/ on the host, so image
# builds install with --no-index (no package index inside the build).
set -euo pipefail
python=${PYTHON:-.venv/bin/python}
out=wheelhouse
mkdir -p "$out"
"$python" - > "$out/requirements.txt" <<'PY'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
# our own package goes to dist/ so a code change does not invalidate the image layer of the wheelhouse
rm -rf dist "$out"/fl_testbed-*.whl
# a fixed timestamp makes the wheel byte-identical while the code is, so the image layers stay cached
SOURCE_DATE_EPOCH=315532800 "$python" -m pip wheel -q --no-deps -w dist .
"$python" -m pip download -q -d "$out" --no-deps tf-encrypted==0.9.1
"$python" -m pip download -q -d "$out" -r "$out/requirements.txt"
echo "wheelhouse: $(ls "$out" | wc -l) files, $(du -sh "$out" | cut -f1)"
