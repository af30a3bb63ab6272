# SPDX-License-Identifier: GPL-2.0-or-later
"""The dpoffload demo, run inside the lab guest by `lab.py demo`.

Builds a hypervisor whose netdevs match examples/vlan.json in a network namespace,
validates every example mapping with `dpoffloadd --check`, and shows what
`dpoffloadd --show` sees in that namespace.
"""

import argparse
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

WIDTH = 72
STEPS = 4

# The hypervisor of examples/vlan.json: (netdev, mapping name, role, vlan, IPv4, IPv6)
VLANS = [
    ("p0.100", "blue", "inner", 100, "10.100.0.1/24", "fd00:100::1/64"),
    ("p0.101", "red", "inner", 101, "10.101.0.1/24", "fd00:101::1/64"),
    ("p0.200", "transit", "outer", 200, "10.200.0.1/24", "fd00:200::1/64"),
]
# Hosts the kernel would learn by ARP / neighbour discovery; static here.
NEIGHBOURS = [
    ("10.100.0.10", "02:00:00:00:01:0a", "p0.100", "a VM on blue"),
    ("10.101.0.10", "02:00:00:00:02:0a", "p0.101", "a VM on red"),
    ("10.200.0.254", "02:00:00:00:c8:fe", "p0.200", "the default gateway on transit"),
    ("fd00:200::fe", "02:00:00:00:c8:fe", "p0.200", "the same gateway, IPv6"),
]

failures = []


def heading(n, title, what):
    print()
    print("=" * WIDTH)
    print(f" Step {n}/{STEPS}  {title}")
    print("=" * WIDTH)
    for para in what:
        print(textwrap.fill(para, WIDTH, initial_indent="  ", subsequent_indent="  "))
    print(flush=True)


def run(argv, ns=None, show=True, must=True, note=""):
    """Run a command (in netns `ns`), printing it like a shell session."""
    full = (["ip", "netns", "exec", ns] if ns else []) + argv
    shown = shlex.join(argv)
    if show:
        print(f"  {'[' + ns + '] ' if ns else ''}$ {shown}" + (f"    # {note}" if note else ""), flush=True)
    r = subprocess.run(full, capture_output=True, text=True)
    out = (r.stdout + r.stderr).rstrip()
    if show and out:
        for line in out.splitlines():
            print(f"      {line}")
    if r.returncode != 0:
        if show:
            print(f"      (exit status {r.returncode})")
        if must:
            failures.append(f"{shown}: exit {r.returncode}: {r.stderr.strip()}")
    sys.stdout.flush()
    return r


def build_hypervisor():
    heading(1, "Build a hypervisor's network",
            ["We are inside a qemu guest running Debian 12's stock kernel "
             f"({os.uname().release}), with this machine's files shared in read-only. "
             "Network namespace 'hv' plays the hypervisor: its uplink p0 is one end of a "
             "veth pair whose other end, fab0, sits in namespace 'fabric' and stands in "
             "for the top-of-rack switch (on a real host p0 is the ConnectX port).",
             "On p0 we create the VLAN sub-interfaces that examples/vlan.json maps: "
             + ", ".join(f"{d} ({n}, {r}, VLAN {v})" for d, n, r, v, _, _ in VLANS) + ". "
             "The kernel routes between them: it is the slow path dpoffloadd accelerates."])
    for ns in ("hv", "fabric"):
        if os.path.exists(f"/run/netns/{ns}"):
            run(["ip", "netns", "del", ns], show=False, must=False)
        run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", "p0", "type", "veth", "peer", "name", "fab0", "netns", "fabric"], ns="hv",
        note="the uplink")
    run(["ip", "link", "set", "p0", "up"], ns="hv")
    run(["ip", "link", "set", "fab0", "up"], ns="fabric")
    for dev, name, role, vid, v4, v6 in VLANS:
        run(["ip", "link", "add", "link", "p0", "name", dev, "type", "vlan", "id", str(vid)], ns="hv",
            note=f"interface '{name}', role {role}")
        run(["ip", "addr", "add", v4, "dev", dev], ns="hv")
        run(["ip", "addr", "add", v6, "dev", dev, "nodad"], ns="hv")
        run(["ip", "link", "set", dev, "up"], ns="hv")
    for addr, mac, dev, what in NEIGHBOURS:
        run(["ip", "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent"], ns="hv",
            note=what)
    run(["ip", "route", "add", "default", "via", "10.200.0.254", "dev", "p0.200"], ns="hv",
        note="default route out of the transit side")
    run(["ip", "-6", "route", "add", "default", "via", "fd00:200::fe", "dev", "p0.200"], ns="hv")
    run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"], ns="hv",
        note="a router")


def show_kernel():
    heading(2, "What the kernel now holds (namespace 'hv')",
            ["These are the tables dpoffloadd reads: links (the VLAN sub-interfaces and their "
             "ids), addresses, routes (longest-prefix match picks the egress interface) and "
             "neighbours (the next hop's MAC address)."])
    run(["ip", "-d", "link", "show", "dev", "p0"], ns="hv")
    for dev, *_ in VLANS:
        run(["ip", "-d", "link", "show", "dev", dev], ns="hv")
    run(["ip", "-br", "addr"], ns="hv")
    run(["ip", "route"], ns="hv")
    run(["ip", "-6", "route"], ns="hv")
    run(["ip", "neigh", "show", "nud", "permanent"], ns="hv")


def check_examples(daemon, examples):
    heading(3, "Validate the interface-mapping files",
            ["`dpoffloadd --check` validates a mapping file against the schema and the "
             "product's rules (unique names, VLAN ids, VNIs, ...) and changes nothing in "
             "the kernel. Each shipped example must be valid."])
    if not daemon:
        print("  (skipped: dpoffloadd is not built)")
        return
    for ex in examples:
        run([daemon, "--check", "--config", str(ex)])


def show_daemon(daemon, mapping):
    heading(4, "What dpoffloadd sees",
            ["`dpoffloadd --show` loads the mapping and reads the kernel's state in the "
             "namespace it runs in: here 'hv', the hypervisor we just built, so every "
             "netdev the mapping names should be found."])
    if daemon:
        run([daemon, "--config", str(mapping), "--show"], ns="hv")
    else:
        print("  (skipped: dpoffloadd is not built)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source-root", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    root = Path(args.source_root)
    daemon = Path(args.build_dir) / "agent" / "dpoffloadd"
    examples = sorted((root / "examples").glob("*.json"))
    mapping = root / "examples" / "vlan.json"

    print("dpoffload demo: a hypervisor in a box")
    print("-" * WIDTH)
    if os.access(daemon, os.X_OK):
        print(f"  daemon:   {daemon}")
        daemon = str(daemon)
    else:
        print(f"  NOTE: {daemon} does not exist (yet): build it with meson/ninja first.")
        print("        The demo still builds the hypervisor and shows its kernel state.")
        daemon = None
    print(f"  mapping:  {mapping}")
    print(f"  examples: {', '.join(e.name for e in examples) or 'none found'}")

    build_hypervisor()
    show_kernel()
    check_examples(daemon, examples)
    show_daemon(daemon, mapping)

    print()
    print("=" * WIDTH)
    if failures:
        print(f" Demo finished with {len(failures)} failing step(s):")
        for f in failures:
            print(f"   - {f}")
        print("=" * WIDTH)
        return 1
    if not daemon:
        print(" Demo finished (without dpoffloadd: build it to see steps 3 and 4).")
    else:
        print(" Demo finished: every step succeeded.")
    print("=" * WIDTH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
