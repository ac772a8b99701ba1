#!/usr/bin/env bash
# The Debian/Ubuntu packages the tests and extras need; run once per machine (uses sudo when not root).
#   ffmpeg, sox, espeak-ng: test audio tools      strace, util-linux: the observed-offline tests (unshare -n)
#   portaudio19-dev: building PyAudio ([live])     pulseaudio*: the virtual microphone of the live tests
#   chromium, chromium-driver: the browser tests of whispersg serve
set -euo pipefail
packages=(ffmpeg sox espeak-ng strace util-linux portaudio19-dev pulseaudio pulseaudio-utils libasound2-plugins
          chromium chromium-driver)
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-packages.sh: no apt-get here; install these with your package manager: ${packages[*]}" >&2
  exit 1
fi
run() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive
run apt-get update -qq
run apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
