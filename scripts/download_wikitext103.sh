#!/usr/bin/env bash
# Downloads WikiText-103 (word level, wikitext-103-v1.zip, ~190 MB) into DIR.
# Usage: bash scripts/download_wikitext103.sh [DIR]   (default DIR: data/wikitext103)
# The zip is used as it is: `algebranets.data.text.wikitext103("DIR/wikitext-103-v1.zip")`
# builds the vocabulary and the token arrays once, into a cache folder beside it.
# (The original S3 location is the fallback; the dataset is also on the Hugging Face hub as
# Salesforce/wikitext, config wikitext-103-v1, in another format.)
set -euo pipefail
urls=(
  "https://wikitext.smerity.com/wikitext-103-v1.zip"
  "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip"
)
dir="${1:-data/wikitext103}"
mkdir -p "$dir"
zip="$dir/wikitext-103-v1.zip"
if [ ! -s "$zip" ]; then
  for url in "${urls[@]}"; do
    echo "downloading $url -> $zip"
    if command -v curl >/dev/null; then
      curl -fL --retry 3 -o "$zip.part" "$url" && break
    else
      wget -O "$zip.part" "$url" && break
    fi
    echo "failed: $url" >&2
  done
  [ -s "$zip.part" ] || { echo "could not download wikitext-103-v1.zip" >&2; exit 1; }
  mv "$zip.part" "$zip"
fi
python3 - "$zip" <<'PY'
import sys, zipfile
path = sys.argv[1]
with zipfile.ZipFile(path) as zf:
  names = set(zf.namelist())
  want = [f"wikitext-103/wiki.{s}.tokens" for s in ("train", "valid", "test")]
  missing = [w for w in want if w not in names]
  if missing:
    sys.exit(f"{path}: missing members {missing}; is this wikitext-103-v1 (not -raw-v1)?")
  bad = zf.testzip()
  if bad:
    sys.exit(f"{path}: member {bad} is corrupt; delete the zip and rerun")
print(f"{path}: ok ({', '.join(want)})")
PY
