#!/bin/sh
# Install the Debian packages of scripts/debian-packages.txt that are missing, at their pinned
# versions (falling back to the archive's version when a pin is no longer published).
set -e
cd "$(dirname "$0")/.."
missing=""
for spec in $(grep -v '^#' scripts/debian-packages.txt); do
    pkg=${spec%%=*}
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $spec"
done
[ -z "$missing" ] && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup: not root and no sudo: install these Debian packages yourself:$missing"; exit 0; fi
fi
echo "setup: installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if ! $SUDO apt-get install -y -qq --no-install-recommends $missing; then
    echo "setup: a pinned version is gone from the archive; installing current versions"
    $SUDO apt-get install -y -qq --no-install-recommends $(echo "$missing" | sed -E 's/=[^ ]+//g')
fi
