"""Build the embedded `emoji` task from the emojibase-data npm package.

Usage::

    npm pack emojibase-data@17.0.0 && tar xzf emojibase-data-17.0.0.tgz
    python scripts/extract_emojibase.py package/ src/lingtrace/data/emojibase/

Keeps the items of the nine content groups (all groups but 2 = components; items without a group
are dropped) that exist in every requested locale, and writes

- ``emoji.jsonl.gz``: one JSON object per item, in emojibase order:
  ``{"hexcode", "emoji", "group" (0..8), "text": {locale: "<CLDR name>: <tag>, <tag>, ..."}}``
- ``meta.json``: label names (English group keys in group order), locales, source version, item count
- ``LICENSE``: the emojibase MIT licence and a note on the Unicode CLDR text it carries.

The output is deterministic (sorted keys, gzip mtime 0) so a rerun reproduces the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from pathlib import Path

LOCALES = ["de", "es", "fr", "ru", "zh", "ko", "ja", "en", "it", "hi", "pt"]
SKIP_GROUPS = {2}  # components (skin tones, hair styles)

CLDR_NOTE = """
----------------------------------------------------------------------------
Note on the text in emoji.jsonl.gz

The emoji names and keywords (the `label` and `tags` fields of emojibase-data)
come from the Unicode Common Locale Data Repository (CLDR) annotations and
derived annotations, distributed under the Unicode License v3:

UNICODE LICENSE V3

COPYRIGHT AND PERMISSION NOTICE

Copyright © 1991-2025 Unicode, Inc.

NOTICE TO USER: Carefully read the following legal agreement. BY
DOWNLOADING, INSTALLING, COPYING OR OTHERWISE USING DATA FILES, AND/OR
SOFTWARE, YOU UNEQUIVOCALLY ACCEPT, AND AGREE TO BE BOUND BY, ALL OF THE
TERMS AND CONDITIONS OF THIS AGREEMENT. IF YOU DO NOT AGREE, DO NOT
DOWNLOAD, INSTALL, COPY, DISTRIBUTE OR USE THE DATA FILES OR SOFTWARE.

Permission is hereby granted, free of charge, to any person obtaining a
copy of data files and any associated documentation (the "Data Files") or
software and any associated documentation (the "Software") to deal in the
Data Files or Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, and/or sell
copies of the Data Files or Software, and to permit persons to whom the
Data Files or Software are furnished to do so, provided that either (a)
this copyright and permission notice appear with all copies of the Data
Files or Software, or (b) this copyright and permission notice appear in
associated Documentation.

THE DATA FILES AND SOFTWARE ARE PROVIDED "AS IS", WITHOUT WARRANTY OF ANY
KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT OF
THIRD PARTY RIGHTS.

IN NO EVENT SHALL THE COPYRIGHT HOLDER OR HOLDERS INCLUDED IN THIS NOTICE
BE LIABLE FOR ANY CLAIM, OR ANY SPECIAL INDIRECT OR CONSEQUENTIAL DAMAGES,
OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS,
WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION,
ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THE DATA
FILES OR SOFTWARE.

Except as contained in this notice, the name of a copyright holder shall
not be used in advertising or otherwise to promote the sale, use or other
dealings in these Data Files or Software without prior written
authorization of the copyright holder.

SPDX-License-Identifier: Unicode-3.0

----------------------------------------------------------------------------
lingtrace uses emojibase-data {version} (https://emojibase.dev), reduced by
scripts/extract_emojibase.py to the locales {locales}: per item the CLDR
name, the CLDR keywords, the emoji group and the hexcode.
"""


def item_text(item: dict) -> str:
    tags = [t for t in item.get("tags") or [] if t]
    label = item["label"].strip()
    return f"{label}: {', '.join(tags)}" if tags else label


def extract(package: Path, out: Path, locales: list[str]) -> dict:
    version = json.loads((package / "package.json").read_text(encoding="utf-8")).get("version", "?")
    groups = json.loads((package / "en" / "messages.json").read_text(encoding="utf-8"))["groups"]
    groups = sorted(groups, key=lambda g: g["order"])
    content = [g["order"] for g in groups if g["order"] not in SKIP_GROUPS]
    remap = {g: i for i, g in enumerate(content)}
    label_names = [g["key"] for g in groups if g["order"] not in SKIP_GROUPS]

    per_locale: dict[str, dict[str, dict]] = {}
    order: list[str] = []
    for loc in locales:
        data = json.loads((package / loc / "data.json").read_text(encoding="utf-8"))
        items = {d["hexcode"]: d for d in data if d.get("group") in remap}
        per_locale[loc] = items
        if not order:
            order = [d["hexcode"] for d in data if d.get("group") in remap]
    common = [h for h in order if all(h in per_locale[loc] for loc in locales)]
    for loc in locales:
        groups_seen = {h: per_locale[loc][h]["group"] for h in common}
        ref = {h: per_locale[locales[0]][h]["group"] for h in common}
        if groups_seen != ref:
            raise SystemExit(f"group assignment differs between {locales[0]} and {loc}")

    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        for h in common:
            first = per_locale[locales[0]][h]
            rec = {
                "hexcode": h,
                "emoji": first["emoji"],
                "group": remap[first["group"]],
                "text": {loc: item_text(per_locale[loc][h]) for loc in locales},
            }
            gz.write((json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "emoji.jsonl.gz").write_bytes(buf.getvalue())
    meta = {
        "source": f"emojibase-data {version} (npm)",
        "locales": locales,
        "label_names": label_names,
        "num_items": len(common),
        "text": "CLDR name + ': ' + ', '.join(CLDR keywords)",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    licence = (package / "LICENSE").read_text(encoding="utf-8").rstrip("\n")
    header = "emojibase-data (https://github.com/milesj/emojibase), MIT License:\n\n"
    (out / "LICENSE").write_text(
        header + licence + "\n" + CLDR_NOTE.format(version=version, locales=" ".join(locales)),
        encoding="utf-8",
    )
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "package", type=Path, help="unpacked emojibase-data npm package (the folder with package.json)"
    )
    ap.add_argument("out", type=Path, nargs="?", default=Path("src/lingtrace/data/emojibase"))
    ap.add_argument("--locales", default=",".join(LOCALES), help="comma-separated locales")
    args = ap.parse_args(argv)
    if not (args.package / "package.json").is_file():
        print(f"{args.package} is not an unpacked npm package (no package.json)", file=sys.stderr)
        return 2
    meta = extract(args.package, args.out, [s for s in args.locales.split(",") if s])
    size = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"{meta['num_items']} items x {len(meta['locales'])} locales -> {args.out} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
