#!/usr/bin/env bash
# Set up everything exitsearch needs on a fresh Debian machine: the Fashion-MNIST package,
# a virtual environment in .venv with the project and its test tools installed.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if (( ${#missing[@]} )); then
    echo "installing Debian packages: ${missing[*]}"
    as_root apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
      as_root apt-get update -q >/dev/null
      as_root apt-get install -y -q "${missing[@]}" >/dev/null
    }
  fi
}

apt_install dataset-fashion-mnist
if [[ ${EXITSEARCH_SETUP_TESTS:-0} == 1 ]]; then
  apt_install postgresql
fi

if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv "$VENV"
fi
stamp=$VENV/.exitsearch-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "installing exitsearch and its dependencies into $VENV (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade "pip>=24" "setuptools>=77" wheel
  # setuptools warns on every editable install that a folder named like the package may shadow
  # it; here that folder is the package itself
  PYTHONWARNINGS="ignore:Editable installation" "$VENV/bin/python" -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
