#!/usr/bin/env bash
# Debian's headless browser for tests/test_report.py: chromium and chromium-driver
# (/usr/bin/chromium, /usr/bin/chromedriver). Idempotent: installs only what is missing,
# and runs `apt-get update` only when the machine has no package lists yet. Python
# packages (selenium) come from the `test` extra in pyproject.toml, not from here.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
    echo "install_browser: chromium and chromedriver already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! compgen -G "/var/lib/apt/lists/*_Packages*" > /dev/null; then
    $SUDO apt-get update -qq
fi
echo "install_browser: installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
/usr/bin/chromium --version
