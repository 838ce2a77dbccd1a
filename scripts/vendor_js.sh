#!/usr/bin/env bash
# Vendor the front-end library the HTML report inlines (rtsmonitor.htmlreport): copy the files of the
# npm package pinned in package-lock.json from node_modules/ into shared/rtsmonitor/vendor/, with its
# licence and a README naming version, source and integrity. The report is built from these copies
# (Python never runs npm), so the wheel and the Functions image need no Node.js.
# Reproducible: the same lock file gives byte-identical files (tests/rtsmonitor/test_htmlreport.py
# compares them with node_modules/ when it is there). To upgrade: npm install --save-exact
# --no-audit --no-fund leaflet@X.Y.Z, then run this script and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=leaflet
DEST=shared/rtsmonitor/vendor
SOURCE=node_modules/$PACKAGE

pinned=$(node -p "(require('./package-lock.json').packages['node_modules/$PACKAGE'] || {}).version || ''")
if [ -z "$pinned" ]; then
    echo "vendor_js: $PACKAGE is not in package-lock.json; run: npm install --save-exact --no-audit --no-fund $PACKAGE@VERSION" >&2
    exit 1
fi
installed=$(node -p "try { require('./$SOURCE/package.json').version } catch (e) { '' }")
if [ "$installed" != "$pinned" ]; then
    echo "vendor_js: node_modules has $PACKAGE '${installed:-none}', the lock file pins $pinned; running npm ci"
    npm ci --no-audit --no-fund --loglevel=error
fi
integrity=$(node -p "require('./package-lock.json').packages['node_modules/$PACKAGE'].integrity")
license=$(node -p "require('./$SOURCE/package.json').license")

rm -rf "${DEST:?}/$PACKAGE"
mkdir -p "$DEST/$PACKAGE/images"
cp "$SOURCE/dist/leaflet.js" "$SOURCE/dist/leaflet.css" "$SOURCE/LICENSE" "$DEST/$PACKAGE/"
cp "$SOURCE"/dist/images/*.png "$DEST/$PACKAGE/images/"
cat > "$DEST/README.md" <<EOF
# Vendored front-end files

Inlined into the self-contained HTML report by \`rtsmonitor.htmlreport\`. Written by
\`scripts/vendor_js.sh\` from \`node_modules/\`; do not edit by hand.

- \`$PACKAGE/\`: Leaflet $pinned ($license, see \`$PACKAGE/LICENSE\`), https://leafletjs.com, from the npm
  package \`$PACKAGE@$pinned\` pinned in \`package-lock.json\` (integrity \`$integrity\`):
  \`dist/leaflet.js\`, \`dist/leaflet.css\`, \`dist/images/*.png\` and \`LICENSE\`, unchanged.
EOF
echo "vendor_js: $PACKAGE $pinned ($license) -> $DEST/$PACKAGE"
