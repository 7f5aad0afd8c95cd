#!/usr/bin/env sh
# open3d-cpu links against the system's libusb-1.0; install it when we can, else say how.
if ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing libusb-1.0-0 (needed by open3d-cpu)..."
    (apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libusb-1.0-0; }) && exit 0
fi
echo "WARNING: the system library libusb-1.0 is missing; the point-cloud plugin (open3d) will not import."
echo "         Fix: sudo apt-get install -y libusb-1.0-0"
