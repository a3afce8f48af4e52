#!/usr/bin/env python3
"""Derives names.tsv and postal.tsv from the openly licensed upstream packages.

Run from an empty folder after fetching the two packages from their registries:
    pip download --no-deps gimei==0.2.3 && unzip gimei-0.2.3-py3-none-any.whl -d gimei
    npm pack japan-postal-code@0.3.0 && mkdir jpc && tar xzf japan-postal-code-0.3.0.tgz -C jpc
    python3 derive.py gimei jpc/package OUTDIR
The output is deterministic (sorted input, no randomness), so re-running it reproduces the
committed files byte for byte.
"""
import glob, json, os, re, sys

gimei, jpc, out = sys.argv[1], sys.argv[2], sys.argv[3]

# names.yml is a tiny regular YAML subset: section headers and ['kanji', 'hira', 'kata'] rows.
rows, section = [], None
for line in open(os.path.join(gimei, "gimei/data/names.yml"), encoding="utf-8"):
    m = re.match(r"^(\s*)([a-z_]+):\s*$", line)
    if m:
        key = m.group(2)
        section = {"male": "male", "female": "female", "last_name": "last"}.get(key, section if key == "first_name" else key)
        continue
    m = re.match(r"^\s*- \['([^']+)', '([^']+)', '([^']+)'\]\s*$", line)
    if m and section in ("male", "female", "last"):
        rows.append((section,) + m.groups())
with open(os.path.join(out, "names.tsv"), "w", encoding="utf-8") as f:
    f.write("# kind\tkanji\thiragana\tkatakana  (from gimei 0.2.3, MIT; see LICENSES.md)\n")
    for r in rows:
        f.write("\t".join(r) + "\n")

# Postal codes: residential entries only (three fields: prefecture, city, town); at most
# eight per city, taken in code order, so every city of Japan is present but the file stays small.
per_city = {}
for path in sorted(glob.glob(os.path.join(jpc, "zipdata/zip-*.js"))):
    s = open(path, encoding="utf-8").read()
    data = json.loads(s[s.index("(") + 1 : s.rindex(")")])
    for code in sorted(data):
        v = data[code]
        if len(v) != 3 or not v[2]:
            continue
        per_city.setdefault((v[0], v[1]), []).append((code, v[2]))
with open(os.path.join(out, "postal.tsv"), "w", encoding="utf-8") as f:
    f.write("# postal\tprefecture_code\tcity\ttown  (from japan-postal-code 0.3.0, MIT; data from Japan Post; see LICENSES.md)\n")
    for (pref, city) in sorted(per_city):
        for code, town in per_city[(pref, city)][:8]:
            f.write(f"{code}\t{pref:02d}\t{city}\t{town}\n")
