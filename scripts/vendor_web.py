"""Vendor the web view's graph library (Cytoscape.js, from npm) into the package, so the
page works offline and nothing is fetched at run time. Pinned by version and by the
tarball's SHA-512; run by `make setup` (standard library only)."""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "3.35.0"
URL = f"https://registry.npmjs.org/cytoscape/-/cytoscape-{VERSION}.tgz"
SHA512 = ("b0cbc121788632786409a5b3d91d3a17017fdbb30d952f93aaf8b5edfa0ef548"
          "67520dd719971c2a3c6cbc4a9014041831249998de52c58cd46254340ce249de")
VENDOR = Path(__file__).resolve().parent.parent / "sdn/northbound/web/vendor"
TARGET = VENDOR / "cytoscape.min.js"
FILES = {"package/dist/cytoscape.min.js": TARGET, "package/LICENSE": VENDOR / "cytoscape.LICENSE"}


def main() -> int:
    stamp = VENDOR / "VERSION"
    if TARGET.exists() and stamp.exists() and stamp.read_text().strip() == VERSION:
        return 0
    with urllib.request.urlopen(URL, timeout=60) as answer:
        data = answer.read()
    if hashlib.sha512(data).hexdigest() != SHA512:
        print(f"vendor_web: {URL} does not have the pinned SHA-512", file=sys.stderr)
        return 1
    VENDOR.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member, target in FILES.items():
            source = tar.extractfile(member)
            if source is None:
                print(f"vendor_web: {member} missing from {URL}", file=sys.stderr)
                return 1
            target.write_bytes(source.read())
    stamp.write_text(VERSION + "\n")
    print(f"vendor_web: Cytoscape.js {VERSION} in {VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
