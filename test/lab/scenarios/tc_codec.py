# SPDX-License-Identifier: GPL-2.0-or-later
"""The tc codec against the real kernel, for the rule shapes NAT and VXLAN will use.

`build/test/tc-probe` (test/kernel/tc_probe.cpp) installs each sample rule through the
daemon's own netlink code, dumps it back and compares: a rule the kernel refuses, or
keeps differently from what the daemon sent, would make the daemon replace it on every
pass. One check per sample, on an uplink-like veth and on a metadata-mode VXLAN device.
On the veth also: a batch with one change refused gets one answer per change, observed
(an echo and an ack each) and unobserved (a first start: one ack for the batch, the
kernel answering only what failed).
"""

import os


def run(lab):
    probe = os.path.join(lab.build_dir, "test", "tc-probe")
    if not lab.check("tc-probe built (--build-dir)", os.access(probe, os.X_OK), f"no executable {probe}"):
        return
    lab.add_netns("hv")
    lab.add_netns("fabric")
    lab.veth("p0", "hv", "fab0", "fabric")
    lab.sh_lines(["ip link add vxlan0 type vxlan external dstport 4789",
                  "ip link set vxlan0 up"], ns="hv")
    for kind, dev in (("vlan", "p0"), ("vxlan", "vxlan0")):
        p = lab.sh(["ip", "netns", "exec", "hv", probe, kind, dev], check=False)
        lines = [l for l in p.stdout.splitlines() if l.startswith(("PASS ", "FAIL "))]
        for line in lines:
            verdict, _, rest = line.partition(" ")
            what, _, detail = rest.partition(": ")
            lab.check(f"{dev}: {what}", verdict == "PASS", detail)
        lab.check(f"{dev}: tc-probe {kind} ran every sample (exit {p.returncode})", lines and p.returncode in (0, 1),
                  (p.stderr or p.stdout)[-300:])
