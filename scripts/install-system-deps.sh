#!/usr/bin/env bash
# Install the Debian packages mbyn needs, only those missing (idempotent; quiet when nothing to do).
#   default: JDK 17 + Maven (Kafka), PostgreSQL (warehouse tests), kcat (external client checks),
#            Chromium + ChromeDriver (UI tests)
set -euo pipefail
want=(openjdk-17-jdk-headless maven postgresql kcat chromium chromium-driver)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# A JDK from elsewhere (e.g. Temurin on PATH) is as good as Debian's.
if command -v javac >/dev/null 2>&1; then
  missing=("${missing[@]/openjdk-17-jdk-headless}")
fi
if command -v mvn >/dev/null 2>&1; then
  missing=("${missing[@]/maven}")
fi
read -r -a missing <<< "${missing[*]}"
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; }; then
    echo "mbyn: please install these Debian packages (or your system's equivalents): ${missing[*]}" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "==> installing Debian packages: ${missing[*]} (apt-get, a few minutes the first time)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The tests call these by name and path: a missing one fails here, with the fix, instead of deep in `make test`
# (they never skip for a missing tool).
for tool in kcat /usr/bin/chromium; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "mbyn: $tool is missing after the install; the tests need it (Debian packages kcat, chromium)" >&2
    exit 1
  fi
done
