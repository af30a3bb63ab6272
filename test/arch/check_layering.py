#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The pure core links no netlink library: checked from the source and the archive.

The build already withholds netlink dependencies from the core (lib/meson.build); this
test catches what that cannot: a netlink header reachable on the default include path
(libmnl's, the kernel's uapi) and undefined netlink symbols in the core archive.
"""
import pathlib
import re
import subprocess
import sys

FORBIDDEN_INCLUDES = re.compile(
    r'#\s*include\s*[<"](netlink/|libmnl/|libnetfilter_conntrack/|libnfnetlink/|linux/netlink\.h|'
    r'linux/rtnetlink\.h|linux/pkt_cls\.h|linux/pkt_sched\.h|linux/tc_act/|kernel/)')
FORBIDDEN_SYMBOLS = re.compile(r'^\s*U\s+(mnl_|nl_|rtnl_|nfct_|nfnl_|nlmsg_|nla_|genl_)')


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
    nm = subprocess.run(['nm', '-u', archive], capture_output=True, text=True, check=True)
    for line in nm.stdout.splitlines():
        if FORBIDDEN_SYMBOLS.search(line):
            failures.append(f'{archive}: pure core references a netlink symbol: {line.strip()}')
    for f in failures:
        print('FAIL', f)
    print(f'layering: {len(sources)} core sources checked, {len(failures)} violation(s)')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
