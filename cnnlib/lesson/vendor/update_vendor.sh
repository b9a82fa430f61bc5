#!/bin/sh
# Re-create the vendored onnxruntime-web files from the pinned npm package (run from anywhere; needs npm).
#   ort.wasm.min.mjs                 the WebAssembly-only ES module build of the library
#   ort-wasm-simd-threaded.mjs       its Emscripten loader (the page hands it over as env.wasm.wasmPaths.mjs, a
#                                    blob: URL: the bundle build's own copy is skipped from file://, where
#                                    Chromium's location.origin is "file://" and the blob's origin is "null")
#   (both without their sourceMappingURL line: no request for a map that is not shipped)
#   ort-wasm-simd-threaded.wasm.gz   its WebAssembly runtime, gzip -9 (the page unpacks it with DecompressionStream)
set -eu
VERSION=1.23.2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "onnxruntime-web@$VERSION" >/dev/null 2>&1 && tar xzf "onnxruntime-web-$VERSION.tgz")
for f in ort.wasm.min.mjs ort-wasm-simd-threaded.mjs; do
  sed '/^\/\/# sourceMappingURL=/d' "$tmp/package/dist/$f" > "$here/$f"
done
gzip -9 -n -c "$tmp/package/dist/ort-wasm-simd-threaded.wasm" > "$here/ort-wasm-simd-threaded.wasm.gz"
printf "onnxruntime-web %s from npm, license: %s\n" "$VERSION" \
    "$(sed -n 's/.*"license": *"\([^"]*\)".*/\1/p' "$tmp/package/package.json")" > "$here/NOTICE"
echo "$VERSION" > "$here/VERSION"
