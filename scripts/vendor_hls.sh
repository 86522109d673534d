#!/usr/bin/env bash
# Vendor hls.js for the studio page: the page must play the stream with no CDN and no network
# beyond the service and nginx, so the minified build and its licence are committed under
# src/poc/ops/static/. Run this only to change the pinned version:
#   scripts/vendor_hls.sh [VERSION]
# It uses `npm pack` (the npm registry's ordinary client); nothing is installed globally.
set -euo pipefail
version=${1:-1.7.4}
here=$(cd "$(dirname "$0")/.." && pwd)
dest=$here/src/poc/ops/static
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null || { echo "vendor_hls: npm is not installed (apt-get install npm)" >&2; exit 1; }
(cd "$work" && npm pack --silent "hls.js@$version" >/dev/null)
tar -xzf "$work"/hls.js-"$version".tgz -C "$work"
package=$work/package
[ -f "$package/dist/hls.min.js" ] || { echo "vendor_hls: hls.js@$version has no dist/hls.min.js" >&2; exit 1; }
mkdir -p "$dest"
cp "$package/dist/hls.min.js" "$dest/hls.min.js"
cp "$package/LICENSE" "$dest/hls.LICENSE.txt"
echo "vendor_hls: hls.js $version -> ${dest#"$here"/}/hls.min.js ($(wc -c <"$dest/hls.min.js") bytes)"
