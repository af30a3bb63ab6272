#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Copies an example mapping file for installation, with "$schema" naming the installed schema.

In the tree, examples/*.json say "$schema": "../schemas/interface-mapping.schema.json",
which editors resolve beside the file. Installed in /usr/share/doc/dpoffloadd/examples/
(or copied to /etc/dpoffload/), that relative path names nothing, so the installed copy
names the schema where the package puts it. Nothing else in the file changes.

  example-schema.py IN OUT SCHEMA_PATH
"""
import json
import re
import sys


def main():
    src, dst, schema = sys.argv[1:4]
    text = open(src, encoding='utf-8').read()
    out, n = re.subn(r'("\$schema"\s*:\s*)"[^"]*"', lambda m: m.group(1) + json.dumps(schema), text, count=1)
    if n != 1:
        sys.exit(f'{src}: no "$schema" key to point at {schema}')
    before, after = json.loads(text), json.loads(out)
    before.pop('$schema')
    if after.pop('$schema') != schema or before != after:
        sys.exit(f'{src}: rewriting "$schema" changed something else')
    with open(dst, 'w', encoding='utf-8') as f:
        f.write(out)


if __name__ == '__main__':
    main()
