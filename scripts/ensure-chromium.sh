#!/usr/bin/env sh
# The web-demo browser test (tests/serve/test_browser.py) drives Debian's Chromium through
# Playwright; it never downloads a browser. Install it when we can, else say how.
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing chromium (for the browser test of modal-core serve)..."
    (apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }) && exit 0
fi
echo "WARNING: Chromium is missing; the browser test of 'modal-core serve' will be skipped."
echo "         Fix: sudo apt-get install -y chromium   (or set MODAL_CORE_CHROMIUM=/path/to/chrome)"
