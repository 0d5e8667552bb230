#!/usr/bin/env bash
# System packages the test suite starts real servers with (Debian/Ubuntu): GStreamer's
# RTSP server for python3-gi, ffmpeg for test clips, tcpdump to inspect encrypted links,
# systemd-analyze to verify the units, the mosquitto MQTT broker and headless Chromium
# to look at the MJPEG page. Idempotent; uses sudo if needed.
set -euo pipefail
packages=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
          gstreamer1.0-plugins-good gstreamer1.0-plugins-bad ffmpeg tcpdump systemd
          mosquitto chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
