#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Keeps the JSON Schema and the loader in step.

Every example must pass both. Each bad variant below must be refused by the loader
with a problem at the named JSON path; the table also says whether the schema refuses
it, and checks that too, so a gap between the two is a line here and not a surprise.
"""
import argparse
import copy
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import jsonschema

def setp(path, value):
    def f(d):
        *parents, last = path.strip('/').split('/')
        for p in parents:
            d = d[int(p)] if isinstance(d, list) else d[p]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value
    return f


def delp(path):
    def f(d):
        *parents, last = path.strip('/').split('/')
        for p in parents:
            d = d[int(p)] if isinstance(d, list) else d[p]
        del d[int(last) if isinstance(d, list) else last]
    return f


def both(*fs):
    def f(d):
        for g in fs:
            g(d)
    return f


SCHEMA, LOADER_ONLY = True, False

# (what, mutation, JSON path the loader must name, does the schema refuse it too?)
BAD = [
    ("uplink missing", delp("/uplink"), "", SCHEMA),
    ("uplink too long", setp("/uplink", "a-very-long-name"), "/uplink", SCHEMA),
    ("uplink with slash", setp("/uplink", "p/0"), "/uplink", SCHEMA),
    ("uplink is '..'", setp("/uplink", ".."), "/uplink", SCHEMA),
    ("unknown top-level key", setp("/uplnk", "p0"), "/uplnk", SCHEMA),
    ("unknown interface key", setp("/interfaces/0/mtu", 9000), "/interfaces/0/mtu", SCHEMA),
    ("unknown nat key", setp("/nat/chunks", 4), "/nat/chunks", SCHEMA),
    ("unknown vxlan key", setp("/vxlan/ttl", 64), "/vxlan/ttl", SCHEMA),
    ("interfaces empty", setp("/interfaces", []), "/interfaces", SCHEMA),
    ("interfaces not a list", setp("/interfaces", {}), "/interfaces", SCHEMA),
    ("VLAN 0", setp("/interfaces/0/vlan", 0), "/interfaces/0/vlan", SCHEMA),
    ("VLAN 4095", setp("/interfaces/0/vlan", 4095), "/interfaces/0/vlan", SCHEMA),
    ("VLAN as string", setp("/interfaces/0/vlan", "100"), "/interfaces/0/vlan", SCHEMA),
    ("VLAN fractional", setp("/interfaces/3/vlan", 200.5), "/interfaces/3/vlan", SCHEMA),
    ("VLAN is the default ACI infra VLAN", setp("/interfaces/0/vlan", 2), "/interfaces/0/vlan", SCHEMA),
    ("VLAN is a moved ACI infra VLAN", both(setp("/aci/vlan", 7), setp("/interfaces/0/vlan", 7)),
     "/interfaces/0/vlan", LOADER_ONLY),
    ("ACI VLAN 4095", setp("/aci/vlan", 4095), "/aci/vlan", SCHEMA),
    ("VNI 0", setp("/interfaces/1/evpn/vni", 0), "/interfaces/1/evpn/vni", SCHEMA),
    ("VNI 2^24", setp("/interfaces/2/aci/vni", 16777216), "/interfaces/2/aci/vni", SCHEMA),
    ("role unknown", setp("/interfaces/1/role", "middle"), "/interfaces/1/role", SCHEMA),
    ("role missing", delp("/interfaces/1/role"), "/interfaces/1", SCHEMA),
    ("no encapsulation", delp("/interfaces/3/vlan"), "/interfaces/3", SCHEMA),
    ("two encapsulations", setp("/interfaces/0/aci", {"vni": 9, "remote_vtep": "10.0.2.11"}), "/interfaces/0", SCHEMA),
    ("name with space", setp("/interfaces/0/name", "blue one"), "/interfaces/0/name", SCHEMA),
    ("duplicate name", setp("/interfaces/3/name", "blue"), "/interfaces/3/name", LOADER_ONLY),
    ("duplicate netdev", setp("/interfaces/3/netdev", "p0.100"), "/interfaces/3/netdev", LOADER_ONLY),
    ("duplicate VLAN", setp("/interfaces/3/vlan", 100), "/interfaces/3/vlan", LOADER_ONLY),
    ("duplicate VNI", setp("/interfaces/2/aci/vni", 5001), "/interfaces/2/aci/vni", LOADER_ONLY),
    ("interface on the uplink", setp("/interfaces/0/netdev", "p0"), "/interfaces/0/netdev", LOADER_ONLY),
    ("evpn interface without evpn section", delp("/evpn"), "/interfaces/1/evpn", SCHEMA),
    ("aci interface without aci section", delp("/aci"), "/interfaces/2/aci", SCHEMA),
    ("vxlan interface without vxlan section", delp("/vxlan"), "/interfaces/1/evpn", SCHEMA),
    ("vxlan port 0", setp("/vxlan/port", 0), "/vxlan/port", SCHEMA),
    ("vxlan device missing", delp("/vxlan/device"), "/vxlan", SCHEMA),
    ("local VTEP not an address", setp("/evpn/local_vtep", "10.0.1"), "/evpn/local_vtep", SCHEMA),
    ("local VTEP multicast", setp("/aci/local_vtep", "239.0.0.1"), "/aci/local_vtep", SCHEMA),
    ("remote VTEP loopback", setp("/interfaces/1/evpn/remote_vtep", "127.0.0.1"), "/interfaces/1/evpn/remote_vtep", SCHEMA),
    ("remote VTEP unspecified v6", setp("/interfaces/1/evpn/remote_vtep", "::"), "/interfaces/1/evpn/remote_vtep", SCHEMA),
    ("VTEP families differ", setp("/interfaces/1/evpn/remote_vtep", "fd00::2"), "/interfaces/1/evpn/remote_vtep", LOADER_ONLY),
    ("remote VTEP is the local one", setp("/interfaces/2/aci/remote_vtep", "10.0.2.1"), "/interfaces/2/aci/remote_vtep", LOADER_ONLY),
    ("nat zone missing", delp("/nat/zone"), "/nat", SCHEMA),
    ("nat zone 65536", setp("/nat/zone", 65536), "/nat/zone", SCHEMA),
    ("pool empty", setp("/nat/pool", []), "/nat/pool", SCHEMA),
    ("pool IPv6", setp("/nat/pool", ["2001:db8::/64"]), "/nat/pool/0", SCHEMA),
    ("pool prefix /0", setp("/nat/pool", ["0.0.0.0/0"]), "/nat/pool/0", SCHEMA),
    ("pool prefix length 33", setp("/nat/pool", ["198.51.100.1/33"]), "/nat/pool/0", SCHEMA),
    ("pool prefix loopback", setp("/nat/pool", ["127.0.0.0/8"]), "/nat/pool/0", SCHEMA),
    ("pool host bits set", setp("/nat/pool", ["198.51.100.1/28"]), "/nat/pool/0", LOADER_ONLY),
    ("pool prefixes overlap", setp("/nat/pool", ["198.51.100.0/28", "198.51.100.8/29"]), "/nat/pool/1", LOADER_ONLY),
    ("ports reversed", setp("/nat/ports", {"first": 5000, "last": 4000}), "/nat/ports/last", LOADER_ONLY),
    ("port 0", setp("/nat/ports/first", 0), "/nat/ports/first", SCHEMA),
    ("chunk larger than range", both(setp("/nat/ports", {"first": 1024, "last": 1100}), setp("/nat/chunk_size", 512)),
     "/nat/chunk_size", LOADER_ONLY),
    ("too many chunks for one address", both(setp("/nat/ports", {"first": 1024, "last": 2047}),
                                             setp("/nat/max_chunks_per_subscriber", 3)),
     "/nat/max_chunks_per_subscriber", LOADER_ONLY),
    ("chunk size 0", setp("/nat/chunk_size", 0), "/nat/chunk_size", SCHEMA),
    ("max chunks 0", setp("/nat/max_chunks_per_subscriber", 0), "/nat/max_chunks_per_subscriber", SCHEMA),
    ("idle seconds 0", setp("/nat/chunk_idle_seconds", 0), "/nat/chunk_idle_seconds", SCHEMA),
    ("logging without collectors", setp("/nat/logging", {}), "/nat/logging", SCHEMA),
    ("logging no collector", setp("/nat/logging", {"collectors": []}), "/nat/logging/collectors", SCHEMA),
    ("collector without port", setp("/nat/logging", {"collectors": ["192.0.2.10"]}), "/nat/logging/collectors/0", SCHEMA),
    ("collector IPv6 unbracketed", setp("/nat/logging", {"collectors": ["2001:db8::10:4739"]}),
     "/nat/logging/collectors/0", SCHEMA),
    ("collector port 0", setp("/nat/logging", {"collectors": ["192.0.2.10:0"]}), "/nat/logging/collectors/0", LOADER_ONLY),
    ("collector listed twice", setp("/nat/logging", {"collectors": ["192.0.2.10:4739", "192.0.2.10:4739"]}),
     "/nat/logging/collectors/1", SCHEMA),
    ("nine collectors", setp("/nat/logging", {"collectors": ["192.0.2.%d:4739" % i for i in range(1, 10)]}),
     "/nat/logging/collectors", SCHEMA),
    ("template refresh 0", setp("/nat/logging", {"collectors": ["192.0.2.10:4739"], "template_refresh_seconds": 0}),
     "/nat/logging/template_refresh_seconds", SCHEMA),
    ("template refresh 3601", setp("/nat/logging", {"collectors": ["192.0.2.10:4739"], "template_refresh_seconds": 3601}),
     "/nat/logging/template_refresh_seconds", SCHEMA),
    ("observation domain 2^32", setp("/nat/logging", {"collectors": ["192.0.2.10:4739"], "observation_domain_id": 4294967296}),
     "/nat/logging/observation_domain_id", SCHEMA),
    ("unknown logging key", setp("/nat/logging", {"collectors": ["192.0.2.10:4739"], "format": "nel"}),
     "/nat/logging/format", SCHEMA),
    ("route table 0", setp("/route_table", 0), "/route_table", SCHEMA),
    ("route table negative", setp("/route_table", -1), "/route_table", SCHEMA),
    ("route table 2^32", setp("/route_table", 4294967296), "/route_table", SCHEMA),
]

GOOD = [
    ("SPEC.md's example", lambda d: None),
    ("no nat", delp("/nat")),
    ("defaults left out", both(delp("/vxlan/port"), delp("/aci/vlan"), delp("/nat/ports"), delp("/nat/chunk_size"),
                               delp("/nat/max_chunks_per_subscriber"), delp("/nat/chunk_idle_seconds"),
                               delp("/route_table"))),
    ("IPv6 VTEPs", both(setp("/evpn/local_vtep", "fd00:1::1"), setp("/interfaces/1/evpn/remote_vtep", "fd00:1::2"))),
    ("moved ACI infra VLAN frees VLAN 2", both(setp("/aci/vlan", 3), setp("/interfaces/0/vlan", 2))),
    ("range edges", both(setp("/interfaces/0/vlan", 1), setp("/interfaces/3/vlan", 4094),
                         setp("/interfaces/2/aci/vni", 16777215), setp("/route_table", 4294967295))),
    ("whole-number float", setp("/interfaces/0/vlan", 100.0)),
    ("$schema key", setp("/$schema", "../schemas/interface-mapping.schema.json")),
    ("a bare pool address is a /32", setp("/nat/pool", ["198.51.100.7"])),
    ("several pool prefixes", setp("/nat/pool", ["198.51.100.0/28", "203.0.113.0/24"])),
]


class Run:
    def __init__(self, dpoffloadd, validator):
        self.dpoffloadd, self.validator = dpoffloadd, validator
        self.passed = self.failed = 0

    def check(self, name, ok, detail=''):
        print(f"{'PASS' if ok else 'FAIL'} {name}" + ('' if ok else f': {detail}'))
        if ok:
            self.passed += 1
        else:
            self.failed += 1

    def loader(self, doc, tmp):
        path = pathlib.Path(tmp) / 'mapping.json'
        path.write_text(json.dumps(doc, indent=2))
        p = subprocess.run([self.dpoffloadd, '--check', '--config', str(path)], capture_output=True, text=True,
                           timeout=30)
        return p.returncode, p.stderr, str(path)

    def schema_errors(self, doc):
        return list(self.validator.iter_errors(doc))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--source-root', required=True)
    ap.add_argument('--dpoffloadd', required=True)
    ap.add_argument('--installed-schema', help="where the build installs the schema")
    ap.add_argument('--built-examples', nargs='*', default=[], help='the examples as the build installs them')
    args = ap.parse_args()
    root = pathlib.Path(args.source_root)
    schema_file = root / 'schemas' / 'interface-mapping.schema.json'
    schema = json.loads(schema_file.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    run = Run(args.dpoffloadd, validator)
    # SPEC.md's example, verbatim; the C++ loader tests read the same file.
    spec_example = json.loads((root / 'test' / 'data' / 'spec-example.json').read_text())

    examples = sorted((root / 'examples').glob('*.json'))
    run.check('examples exist', len(examples) >= 3, f'found {examples}')
    for ex in examples:
        doc = json.loads(ex.read_text())
        errs = run.schema_errors(doc)
        run.check(f'schema accepts examples/{ex.name}', not errs, '; '.join(e.message for e in errs))
        p = subprocess.run([args.dpoffloadd, '--check', '--config', str(ex)], capture_output=True, text=True)
        run.check(f'loader accepts examples/{ex.name}', p.returncode == 0, p.stderr.strip())
        # In the tree "$schema" is relative to the file (editors resolve it there).
        named = (ex.parent / doc.get('$schema', '')).resolve()
        run.check(f"examples/{ex.name}: $schema names the tree's schema", named == schema_file.resolve(),
                  f"{doc.get('$schema')!r} resolves to {named}")
    # Installed, "$schema" names the installed schema (it works in a copy in /etc too);
    # the rest of the file is the tree's. The lab's package_upgrade scenario validates
    # the installed examples against the installed schema.
    built = {pathlib.Path(b).name: pathlib.Path(b) for b in args.built_examples}
    run.check('every example is installed', sorted(built) == [e.name for e in examples],
              f'installed {sorted(built)}, examples {[e.name for e in examples]}')
    for ex in examples:
        if ex.name not in built:
            continue
        doc, inst = json.loads(ex.read_text()), json.loads(built[ex.name].read_text())
        run.check(f'installed {ex.name}: $schema is {args.installed_schema}',
                  inst.get('$schema') == args.installed_schema and os.path.isabs(inst['$schema']),
                  f"it is {inst.get('$schema')!r}")
        doc.pop('$schema', None)
        inst.pop('$schema', None)
        run.check(f'installed {ex.name}: the rest is the example', doc == inst, 'it differs')

    with tempfile.TemporaryDirectory() as tmp:
        for what, mutate in GOOD:
            doc = copy.deepcopy(spec_example)
            mutate(doc)
            errs = run.schema_errors(doc)
            run.check(f'schema accepts: {what}', not errs, '; '.join(e.message for e in errs))
            code, err, _ = run.loader(doc, tmp)
            run.check(f'loader accepts: {what}', code == 0, err.strip())
        for what, mutate, path, schema_too in BAD:
            doc = copy.deepcopy(spec_example)
            mutate(doc)
            code, err, file = run.loader(doc, tmp)
            shown = path if path else '(document)'
            named = any(line.startswith(f'{file}: {shown}: ') for line in err.splitlines())
            run.check(f'loader refuses: {what}', code == 1 and named,
                      f'exit {code}, expected a problem at {shown!r}; stderr: {err.strip()!r}')
            errs = run.schema_errors(doc)
            if schema_too:
                run.check(f'schema refuses: {what}', bool(errs), 'the schema accepted it')
            else:
                run.check(f'schema cannot express: {what} (loader-only, documented)', not errs,
                          'the schema now refuses it: mark the row SCHEMA')
    print(f'{run.passed} passed, {run.failed} failed')
    return 0 if run.failed == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
