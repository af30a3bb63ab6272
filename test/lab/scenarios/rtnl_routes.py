# SPDX-License-Identifier: GPL-2.0-or-later
"""The watcher's route store against the kernel's own dump, change by change.

`build/test/route-probe` (test/kernel/route_probe.cpp) changes routes the ways a routing
daemon does (add, replace, append, IPv4 and IPv6 multipath, metrics, tables, one next
hop or a whole route deleted), feeds each notification to the daemon's RouteStore
(kernel/route_store, which stands in for libnl's route cache), and after each change
compares the store with a fresh dump: the store must hold, per route, what the kernel
forwards with. libnl's route cache, which the watcher used before, gets two of these
wrong (a replaced IPv6 route merged with the one it replaced; a next hop deleted from an
IPv6 multipath route kept) and one differently (an appended IPv4 alias taken for the route).
"""

import os


def run(lab):
    probe = os.path.join(lab.build_dir, "test", "route-probe")
    if not lab.check("route-probe built (--build-dir)", os.access(probe, os.X_OK), f"no executable {probe}"):
        return
    lab.add_netns("rt")
    lab.sh_lines(["ip link set lo up",
                  "ip link add d0 type dummy", "ip link set d0 up",
                  "ip link add d1 type dummy", "ip link set d1 up",
                  "ip addr add 10.9.0.1/24 dev d0", "ip addr add 10.9.1.1/24 dev d1",
                  "ip addr add fd09::1/64 dev d0 nodad", "ip addr add fd09:1::1/64 dev d1 nodad"], ns="rt")
    p = lab.sh(["ip", "netns", "exec", "rt", probe], check=False, timeout=120)
    lines = [l for l in p.stdout.splitlines() if l.startswith(("PASS ", "FAIL "))]
    for line in lines:
        verdict, _, rest = line.partition(" ")
        what, _, detail = rest.partition(": ")
        lab.check(f"route store {what}", verdict == "PASS", detail)
    lab.check(f"route-probe ran every step (exit {p.returncode})", len(lines) >= 30 and p.returncode in (0, 1),
              (p.stderr or p.stdout)[-300:])
