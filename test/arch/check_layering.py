#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The pure core links no netlink library, and its folders include only downward.

The build already withholds netlink dependencies from the core (lib/meson.build); this
test catches what that cannot: a netlink header reachable on the default include path
(libmnl's, the kernel's uapi) and undefined netlink symbols in the core archive.

The core's folders follow the daemon's data flow, watch -> model -> compile ->
reconcile -> program, with the engine on top driving them. A file may include its own
folder and folders of a lower level only (LEVELS), so no include runs back up the flow.
"""
import pathlib
import re
import subprocess
import sys

FORBIDDEN_INCLUDES = re.compile(
    r'#\s*include\s*[<"](netlink/|libmnl/|libnetfilter_conntrack/|libnfnetlink/|linux/netlink\.h|'
    r'linux/rtnetlink\.h|linux/pkt_cls\.h|linux/pkt_sched\.h|linux/tc_act/|kernel/|systemd/)')
# libsystemd (sd_*) too: the journal and notify sinks live in agent/, behind core/log's sink.
FORBIDDEN_SYMBOLS = re.compile(r'^\s*U\s+(mnl_|nl_|rtnl_|nfct_|nfnl_|nlmsg_|nla_|genl_|sd_)')
CORE_INCLUDE = re.compile(r'#\s*include\s*"core/([^"]+)"')

# lib/core/<folder> -> level; "" is lib/core itself (config, IP types, Result, log).
# Folders of one level are independent of each other.
LEVELS = {
    '': 0,
    'tc': 1,         # the tc rule representation
    'model': 1,      # the kernel's links, addresses, routes, neighbours
    'nat': 2,        # port chunks and the NAT stage's state
    'compile': 3,    # mapping + model + NAT state -> rules
    'reconcile': 4,  # rules wanted against rules installed -> changes
    'program': 5,    # the tc writer's interface and what drives it
    'engine': 6,     # dirty keys, lanes, the desired and installed sets
}


def folder_of(rel: str) -> str:
    parts = rel.split('/')
    return parts[0] if len(parts) > 1 else ''


def main() -> int:
    root, archive = pathlib.Path(sys.argv[1]), sys.argv[2]
    failures = []
    sources = sorted((root / 'lib' / 'core').rglob('*.[ch]pp'))
    if not sources:
        failures.append('no sources found under lib/core: wrong root?')
    for src in sources:
        for n, line in enumerate(src.read_text().splitlines(), 1):
            if FORBIDDEN_INCLUDES.search(line):
                failures.append(f'{src.relative_to(root)}:{n}: pure core includes I/O: {line.strip()}')
            m = CORE_INCLUDE.search(line)
            if not m:
                continue
            here = folder_of(str(src.relative_to(root / 'lib' / 'core')))
            there = folder_of(m.group(1))
            if here not in LEVELS or there not in LEVELS:
                failures.append(f'{src.relative_to(root)}:{n}: core folder without a level in LEVELS: '
                                f'{here if here not in LEVELS else there}')
            elif there != here and LEVELS[there] >= LEVELS[here]:
                failures.append(f'{src.relative_to(root)}:{n}: core/{here or "."} includes core/{there} '
                                f'(level {LEVELS[there]} >= {LEVELS[here]}): the include runs back up the flow')
    nm = subprocess.run(['nm', '-u', archive], capture_output=True, text=True, check=True)
    for line in nm.stdout.splitlines():
        if FORBIDDEN_SYMBOLS.search(line):
            failures.append(f'{archive}: pure core references a netlink or libsystemd symbol: {line.strip()}')
    for f in failures:
        print('FAIL', f)
    print(f'layering: {len(sources)} core sources checked, {len(failures)} violation(s)')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
