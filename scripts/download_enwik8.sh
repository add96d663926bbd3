#!/usr/bin/env bash
# Downloads enwik8.zip (the Hutter-prize enwik8, 100,000,000 bytes zipped to ~36 MB) into DIR.
# Usage: bash scripts/download_enwik8.sh [DIR]        (default DIR: data/enwik8)
# The zip is used as it is: `algebranets.data.text.enwik8("DIR/enwik8.zip")` (or the config's
# data path) streams its member into a cache file once. Pass --unzip to also write DIR/enwik8.
set -euo pipefail
url="http://mattmahoney.net/dc/enwik8.zip"
unzip_too=0
args=()
for a in "$@"; do
  case "$a" in
    --unzip) unzip_too=1 ;;
    *) args+=("$a") ;;
  esac
done
dir="${args[0]:-data/enwik8}"
mkdir -p "$dir"
zip="$dir/enwik8.zip"
if [ ! -s "$zip" ]; then
  echo "downloading $url -> $zip"
  if command -v curl >/dev/null; then
    curl -fL --retry 3 -o "$zip.part" "$url"
  else
    wget -O "$zip.part" "$url"
  fi
  mv "$zip.part" "$zip"
fi
# Check the archive: one member named enwik8 of exactly 100,000,000 bytes, CRC intact.
python3 - "$zip" "$unzip_too" <<'PY'
import shutil, sys, zipfile
path, unzip_too = sys.argv[1], sys.argv[2] == "1"
with zipfile.ZipFile(path) as zf:
  info = zf.getinfo("enwik8")
  if info.file_size != 100_000_000:
    sys.exit(f"{path}: member enwik8 has {info.file_size} bytes, expected 100000000")
  bad = zf.testzip()
  if bad:
    sys.exit(f"{path}: member {bad} is corrupt; delete the zip and rerun")
  if unzip_too:
    dest = path[:-len(".zip")]  # DIR/enwik8: a name chosen here, not taken from the archive
    with zf.open(info) as src, open(dest + ".part", "wb") as out:
      shutil.copyfileobj(src, out, 1 << 24)
    shutil.move(dest + ".part", dest)
    print(f"wrote {dest}")
print(f"{path}: ok (enwik8, 100,000,000 bytes)")
PY
