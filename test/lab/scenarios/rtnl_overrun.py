# SPDX-License-Identifier: GPL-2.0-or-later
"""A netlink overrun (ENOBUFS) makes the daemon resync fully, say so, and go on.

The daemon runs with a small rtnetlink receive buffer (`--netlink-rcvbuf`, an
operator's tunable; the default is 32 MiB) and is frozen (SIGSTOP) while routes churn,
so more route notifications queue than the buffer holds; the kernel drops the rest and
reports ENOBUFS. Thawed, the daemon must log `resync`, rebuild its state from
a fresh dump, and keep following changes. The churn adds and deletes the same routes,
so after the resync nothing needs to change (messages=0).
"""

import os
import signal
import tempfile
import time

from labkit import DaemonProcess

MAPPING = """{"uplink": "p0", "interfaces": [
 {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
 {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}]}"""
RCVBUF = 65536  # bytes: a few dozen notifications' worth of skbs
CHURN = 2000    # route adds and as many deletes: far more than RCVBUF holds


def run(lab):
    if not lab.check("dpoffloadd built (--build-dir)", lab.daemon_path() is not None, "no agent/dpoffloadd"):
        return
    lab.add_netns("hv")
    lab.add_netns("fabric")
    lab.veth("p0", "hv", "fab0", "fabric")
    lab.vlan_device("hv", "p0", 100, "10.100.0.1/24", "fd00:100::1/64", [("10.100.0.2", "02:00:00:00:01:02")])
    lab.vlan_device("hv", "p0", 200, "10.200.0.1/24", "fd00:200::1/64", [("10.200.0.2", "02:00:00:00:02:02")])
    fd, config = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(MAPPING)
    batch = os.path.join(tempfile.mkdtemp(), "routes")
    with open(batch, "w") as f:
        for i in range(CHURN):
            f.write(f"route add 172.{16 + i // 65536 % 16}.{i // 256 % 256}.{i % 256}/32 via 10.200.0.2\n")
        for i in range(CHURN):
            f.write(f"route del 172.{16 + i // 65536 % 16}.{i // 256 % 256}.{i % 256}/32 via 10.200.0.2\n")
    d = DaemonProcess(lab, "hv", config, "overrun", args=("--netlink-rcvbuf", str(RCVBUF)))
    try:
        first, why = d.next_event("reconciled", 30)
        if not lab.check("daemon started and reconciled", first is not None, why):
            return
        os.kill(d.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        lab.sh(["ip", "-n", "hv", "-batch", batch])
        churn_s = time.monotonic() - t0
        os.kill(d.proc.pid, signal.SIGCONT)
        lab.note(f"{2 * CHURN} route changes while the daemon was stopped, in {churn_s:.1f} s")
        resync, why = d.next_event("resync", 60)
        lab.check("after the overrun the daemon logs a resync (ENOBUFS: events lost, state dumped again)",
                  resync is not None and "ENOBUFS" in resync.get("reason", ""), why)
        rec, why = d.next_event("reconciled", 60, lambda f: f.get("messages") == "0")
        lab.check("the resync's reconcile finds nothing to change (messages=0): the state is whole again",
                  rec is not None, why)
        d.skip_to_now()
        lab.sh("ip route add 198.18.0.0/15 via 10.200.0.2", ns="hv")
        rec, why = d.next_event("reconciled", 30, lambda f: f.get("added") not in (None, "0"))
        lab.check("after the resync it still follows changes (a new route is reconciled in)", rec is not None, why)
        lab.check("the daemon is still running", d.proc.poll() is None, f"exited {d.proc.returncode}")
    finally:
        try:
            os.kill(d.proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        d.kill()
        os.unlink(config)
