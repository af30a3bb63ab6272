# SPDX-License-Identifier: GPL-2.0-or-later
"""The start-up kernel feature probe (lib/kernel/feature_probe.hpp): the daemon says which
module is missing, before its first rule, and acts on it.

Topology: test/lab/vxlan_hypervisor.py (VLAN, EVPN and ACI interfaces on p0 and vxlan0), with
the mapping of fastpath_vxlan (NAT, EVPN, ACI): it needs every feature the probe knows.

How a module is made unavailable in the guest: the guest /init loads every module of
lab.py's MODULES and points the kernel's module helper (/proc/sys/kernel/modprobe) at its
own modprobe. This scenario `rmmod`s the module (unused once the daemon's rules are
flushed), then points the helper at a wrapper (on the guest's writable /tmp) that logs each
request of the kernel and refuses the names listed in a file: the kernel's autoload then
fails exactly as on a host where the module does not exist. Everything is put back at the
end (helper, modules), checked, so the scenarios after this one see the usual kernel.

Checks:
  1. everything loaded: the probe passes silently (no kernel-feature-* warning) and sends
     0 messages (every module in /sys/module);
  2. act_vlan, act_ct, act_tunnel_key, nf_conntrack_netlink unloaded but loadable: the probe
     loads them through the kernel's autoload (the helper was asked), finds nothing missing,
     and sends exactly 1 (clsact) + 1 (flower) + 3 (one per action kind) + 1 (delete) + 1
     (ctnetlink) = 7 messages, within the stated bound of 12;
  3. act_ct, act_tunnel_key, nf_conntrack_netlink unavailable: one kernel-feature-missing
     line each, naming feature and module, with its effect; the daemon runs degraded: no
     NAT stage (no punt pair, no ct action), no EVPN/ACI rule (nothing on vxlan0, no
     tunnel_key), the VLAN rules in and none refused;
  4. cls_flower unavailable: exit 1 before any rule, kernel-feature-missing feature=cls_flower
     with the kernel's extack, startup-refused; the clsact qdisc the probe made on p0 is
     deleted again (the kernel as found);
  5. the uplink missing at start: the probe runs on lo, and leaves lo without a clsact.
Beside them (step 1) test/cli's signal checks, which cannot run on the build machines any
more (their kernel has no cls_flower: the daemon refuses to start there, by design):
SIGHUP with a broken file refused, with a fixed one reloaded (not probed again), SIGTERM.
"""

import os
import signal
import tempfile
import time

import vxlan_hypervisor as vh
from labkit import DaemonProcess, start_daemon

MAPPING = """{ "uplink": "%s", "vxlan": { "device": "vxlan0", "port": 4789 },
  "aci": { "vlan": 2, "local_vtep": "10.0.2.1" }, "evpn": { "local_vtep": "10.0.1.1" },
  "interfaces": [
    { "name": "blue",    "netdev": "p0.100",    "role": "inner", "vlan": 100 },
    { "name": "green",   "netdev": "svi-green", "role": "inner", "evpn": { "vni": 5001, "remote_vtep": "10.0.1.2" } },
    { "name": "web",     "netdev": "svi-web",   "role": "inner", "aci":  { "vni": 6001, "remote_vtep": "10.0.2.10" } },
    { "name": "transit", "netdev": "p0.200",    "role": "outer", "vlan": 200 } ],
  "nat": { "zone": 1, "pool": ["198.51.100.0/30"], "ports": {"first": 1024, "last": 2047}, "chunk_size": 512,
           "max_chunks_per_subscriber": 2, "chunk_idle_seconds": 30 } }
"""

# What the mapping needs (lib/core/features.cpp), by module.
NEEDED = ["sch_ingress", "cls_flower", "act_gact", "act_mirred", "act_pedit", "act_csum", "act_vlan",
          "act_ct", "act_tunnel_key", "act_police", "nf_conntrack_netlink"]
MAX_MESSAGES = 13          # the probe's stated bound (feature_probe.hpp)
START_TIMEOUT = 30.0
WORK = "/tmp/dpo-kernel-features"           # the chroot's /tmp: /host/tmp for the kernel's helper
WRAPPER = WORK + "/modprobe"
HELPER_PATH = "/host" + WRAPPER             # as the kernel's helper (in the guest's initramfs root) sees it

WRAPPER_TEXT = """#!/bin/busybox sh
# The kernel's module helper for scenario kernel_features: log, refuse what is blocked.
echo "$*" >> /host%(work)s/requests
for a in "$@"; do
  if /bin/busybox grep -qxF -- "$a" /host%(work)s/blocked 2>/dev/null; then exit 1; fi
done
exec %(real)s "$@"
"""


def loaded(mod):
    return os.path.isdir(f"/sys/module/{mod}")


class Modules:
    """The guest's module helper pointed at a logging, blocking wrapper; put back by restore()."""

    def __init__(self, lab):
        self.lab = lab
        with open("/proc/sys/kernel/modprobe") as f:
            self.real = f.read().strip()
        os.makedirs(WORK, exist_ok=True)
        with open(WRAPPER, "w") as f:
            f.write(WRAPPER_TEXT % {"work": WORK, "real": self.real})
        os.chmod(WRAPPER, 0o755)
        self.block([])
        self.removed = set()
        with open("/proc/sys/kernel/modprobe", "w") as f:
            f.write(HELPER_PATH)

    def block(self, mods):
        with open(WORK + "/blocked", "w") as f:
            f.write("".join(m + "\n" for m in mods))
        # The kernel asks for a classifier by "cls_X", an action by "act_X", clsact by
        # "sch_clsact", ctnetlink by "nfnetlink-subsys-1": block the alias as well.
        if "nf_conntrack_netlink" in mods:
            with open(WORK + "/blocked", "a") as f:
                f.write("nfnetlink-subsys-1\n")

    def requests(self):
        try:
            with open(WORK + "/requests") as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def clear_requests(self):
        open(WORK + "/requests", "w").close()

    def unload(self, mods):
        """rmmod each (retrying while a namespace or action that held it is freed); True if all went."""
        deadline = time.monotonic() + 15
        left = [m for m in mods if loaded(m)]
        while left and time.monotonic() < deadline:
            for m in list(left):
                self.lab.sh(["rmmod", m], check=False)
                if not loaded(m):
                    left.remove(m)
                    self.removed.add(m)
            if left:
                time.sleep(0.3)
        return not left, left

    def reload(self):
        """Unblock and load again what was removed: each step starts from every module loaded."""
        self.block([])
        for m in sorted(self.removed):
            if not loaded(m):
                self.lab.sh(["modprobe", m], check=False)

    def restore(self):
        self.reload()
        with open("/proc/sys/kernel/modprobe", "w") as f:
            f.write(self.real)
        return [m for m in NEEDED if not loaded(m)]


def write_config(uplink="p0"):
    fd, path = tempfile.mkstemp(prefix="kernel_features-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(MAPPING % uplink)
    return path


def features_line(d, timeout=START_TIMEOUT):
    return d.next_event("kernel-features", timeout)


def probe_lines(d):
    return [(e, f) for e in ("kernel-feature-missing", "kernel-feature-unknown") for f in d.events(e)]


def filters(lab, dev):
    return lab.sh(["tc", "filter", "show", "dev", dev, "ingress"], ns="hv", check=False).stdout


def has_clsact(lab, dev, ns="hv"):
    return "qdisc clsact" in lab.sh(["tc", "qdisc", "show", "dev", dev], ns=ns, check=False).stdout


def stop_and_flush(lab, d, config):
    d.stop()
    d.kill()
    vh.daemon_flush(lab, config)


def run(lab):
    if not lab.check("dpoffloadd built (--build-dir)", lab.daemon_path() is not None,
                     f"no executable agent/dpoffloadd under {lab.build_dir}"):
        return
    vh.build(lab)
    config = write_config()
    mods = Modules(lab)
    try:
        everything_loaded(lab, config)
        autoloaded(lab, config, mods)
        degraded(lab, config, mods)
        refused(lab, config, mods)
        uplink_missing(lab, mods)
    finally:
        missing = mods.restore()
        lab.check("put back: the kernel's module helper and every module the daemon needs",
                  not missing, f"not loaded again: {missing}")


def everything_loaded(lab, config):
    not_loaded = [m for m in NEEDED if not loaded(m)]
    lab.note(f"1. modules the mapping needs that are not loaded at the start: {not_loaded or 'none'}")
    d, rec = start_daemon(lab, config, "loaded", timeout=START_TIMEOUT)
    try:
        f = d.events("kernel-features")
        f = f[0] if f else {}
        lab.check(f"1. everything loaded: the probe passes silently and sends 0 messages "
                  f"(kernel-features checked={f.get('checked')} loaded={f.get('loaded')} "
                  f"messages={f.get('messages')} missing={f.get('missing')})",
                  not not_loaded and f.get("messages") == "0" and f.get("missing") == "0"
                  and f.get("loaded") == str(len(NEEDED)) and not probe_lines(d),
                  f"{f}; {probe_lines(d)}; log: {d.tail()}")
        if rec:
            vh.reconciled_check(lab, "1. the daemon installed its rules", d, rec)
            signals(lab, d, config)
    finally:
        stop_and_flush(lab, d, config)


def signals(lab, d, config):
    """test/cli's signal checks, which need a kernel with tc flower (the host's refuses the start)."""
    text = open(config).read()
    try:
        with open(config, "w") as f:
            f.write('{ "uplink": ')
        d.proc.send_signal(signal.SIGHUP)
        got, why, _ = d.wait_event("reload-refused", lambda f: True, 15)
        lab.check("1. SIGHUP with a broken file is refused and the daemon keeps running",
                  got is not None and d.proc.poll() is None, why)
        with open(config, "w") as f:
            f.write(text.replace('"blue"', '"azure"'))
        d.proc.send_signal(signal.SIGHUP)
        got, why, _ = d.wait_event("reloaded", lambda f: True, 15)
        lab.check("1. SIGHUP with a fixed file reloads; the same stages are not probed again",
                  got is not None and len(d.events("kernel-features")) == 1, why or str(d.events("kernel-features")))
        code = d.stop()
        lab.check(f"1. SIGTERM: stopping, exit {code}", code == 0 and d.events("stopping"), d.tail())
    finally:
        with open(config, "w") as f:
            f.write(text)


def autoloaded(lab, config, mods):
    unload = ["act_vlan", "act_ct", "act_tunnel_key", "nf_conntrack_netlink"]
    ok, left = mods.unload(unload)
    if not lab.check(f"2. rmmod {' '.join(unload)} (after the flush nothing uses them)", ok, f"still loaded: {left}"):
        return
    mods.clear_requests()
    d, rec = start_daemon(lab, config, "autoload", timeout=START_TIMEOUT)
    try:
        f = d.events("kernel-features")
        f = f[0] if f else {}
        want = 1 + 1 + 3 + 1 + 1
        asked = mods.requests()
        now_loaded = [m for m in unload if loaded(m)]
        lab.check(f"2. unloaded but loadable: nothing missing, the kernel autoloaded them for the probe "
                  f"(helper asked for {sorted(a for a in set(asked) if not a.startswith('-'))})",
                  f.get("missing") == "0" and not probe_lines(d) and now_loaded == unload
                  and {"act_vlan", "act_ct", "act_tunnel_key"} <= set(asked),
                  f"{f}; {probe_lines(d)}; loaded now: {now_loaded}; helper: {asked}")
        lab.check(f"2. the probe's cost: {f.get('messages')} messages (want 1 clsact + 1 flower + 3 actions + "
                  f"1 delete + 1 ctnetlink = {want}; bound {MAX_MESSAGES}), probed={f.get('probed')} on "
                  f"{f.get('device')}",
                  f.get("messages") == str(want) and f.get("probed") == "4" and f.get("device") == "p0",
                  str(f))
        lab.check("2. no probe filter left behind (chain 0xfffffff)",
                  "chain 268435455" not in filters(lab, "p0"), filters(lab, "p0")[-300:])
        if rec:
            vh.reconciled_check(lab, "2. the daemon installed its rules", d, rec)
    finally:
        stop_and_flush(lab, d, config)
        mods.reload()


def degraded(lab, config, mods):
    gone = ["act_ct", "act_tunnel_key", "nf_conntrack_netlink"]
    ok, left = mods.unload(gone)
    if not lab.check(f"3. rmmod {' '.join(gone)}", ok, f"still loaded: {left}"):
        return
    mods.block(gone)
    mods.clear_requests()
    d, rec = start_daemon(lab, config, "degraded", timeout=START_TIMEOUT)
    try:
        missing = {f.get("module"): f for f in d.events("kernel-feature-missing")}
        warn = [l for l in d.lines() if l.startswith("<4>kernel-feature-missing")]
        lab.note("3. " + " | ".join(warn))
        want = {"act_ct": ("act_ct", "NAT stage not running"),
                "act_tunnel_key": ("act_tunnel_key", "EVPN and ACI interfaces left to the kernel"),
                "nf_conntrack_netlink": ("ctnetlink", "NAT stage not running")}
        bad = [m for m, (feat, eff) in want.items()
               if m not in missing or missing[m].get("feature") != feat or eff not in missing[m].get("effect", "")]
        lab.check("3. act_ct, act_tunnel_key, nf_conntrack_netlink unavailable: one warning each, naming "
                  "feature, module and effect",
                  not bad and len(warn) == 3 and set(missing) == set(want),
                  f"wrong or absent: {bad}; lines: {warn}; log: {d.tail()}")
        lab.check("3. the kernel was asked for them (autoload tried, refused)",
                  {"act_ct", "act_tunnel_key"} <= set(mods.requests()), str(mods.requests()))
        if not rec:
            return
        p0, vx = filters(lab, "p0"), filters(lab, "vxlan0")
        punt = lab.sh(["ip", "link", "show", "dpo-punt"], ns="hv", check=False).returncode == 0
        lab.check(f"3. runs degraded: VLAN rules in, none refused (rules={rec.get('rules')} "
                  f"refused={rec.get('refused')})",
                  rec.get("refused") == "0" and not d.events("rule-refused") and int(rec.get("rules", 0)) > 0,
                  f"{rec['_line']}; {d.events('rule-refused')[:2]}")
        lab.check("3. no NAT stage: no ct action, no punt pair, no nat-running line",
                  " ct " not in p0 and "ct_state" not in p0 and not punt and not d.events("nat-running"),
                  f"punt pair: {punt}; nat-running: {d.events('nat-running')}")
        lab.check("3. EVPN and ACI left to the kernel: no rule on vxlan0, no tunnel_key anywhere",
                  not vx.strip() and "tunnel_key" not in p0, (vx or p0)[-300:])
    finally:
        stop_and_flush(lab, d, config)
        mods.reload()


def refused(lab, config, mods):
    ok, left = mods.unload(["cls_flower"])
    if not lab.check("4. rmmod cls_flower", ok, f"still loaded: {left}"):
        return
    mods.block(["cls_flower"])
    lab.sh("tc qdisc del dev p0 clsact", ns="hv", check=False)  # so that the probe must make one
    d = DaemonProcess(lab, "hv", config, "refused")
    try:
        try:
            rc = d.proc.wait(timeout=START_TIMEOUT)
        except Exception:
            rc = None
        lines = d.lines()
        miss = [f for f in d.events("kernel-feature-missing") if f.get("module") == "cls_flower"]
        refusal = d.events("startup-refused")
        lab.note("4. " + " | ".join(l for l in lines if "kernel-feature" in l or "startup" in l))
        lab.check("4. cls_flower unavailable: exit 1, kernel-feature-missing feature=cls_flower (error, with the "
                  "kernel's extack), startup-refused naming it",
                  rc == 1 and miss and miss[0].get("feature") == "cls_flower"
                  and any(l.startswith("<3>kernel-feature-missing") for l in lines)
                  and "classifier" in miss[0].get("extack", "")
                  and refusal and "cls_flower" in refusal[0].get("reason", ""),
                  f"exit {rc}; log: {' | '.join(lines[-6:])}")
        lab.check("4. before any rule: no started / reconciled line, no filter, and the clsact the probe made "
                  "on p0 deleted again",
                  not d.events("started") and not d.events("reconciled") and not filters(lab, "p0").strip()
                  and not has_clsact(lab, "p0"),
                  lab.sh(["tc", "qdisc", "show", "dev", "p0"], ns="hv", check=False).stdout)
    finally:
        d.kill()
        mods.reload()


def uplink_missing(lab, mods):
    ok, left = mods.unload(["act_tunnel_key"])
    if not lab.check("5. rmmod act_tunnel_key", ok, f"still loaded: {left}"):
        return
    config = write_config("p9")  # no such device (yet)
    d = DaemonProcess(lab, "hv", config, "no-uplink")
    try:
        f, line = features_line(d)
        ok = f is not None
        lab.check(f"5. uplink missing at start: the probe runs on lo and finds nothing missing ({(line or '').strip()})",
                  ok and f.get("device") == "lo" and f.get("missing") == "0" and loaded("act_tunnel_key")
                  and f.get("messages") == str(1 + 1 + 1 + 1 + 1),
                  f"{line}; want messages=5 (clsact on lo, flower, tunnel_key, delete, clsact deleted)")
        lab.check("5. lo left as found (no clsact)", not has_clsact(lab, "lo"),
                  lab.sh(["tc", "qdisc", "show", "dev", "lo"], ns="hv", check=False).stdout)
    finally:
        d.stop()
        d.kill()
        mods.reload()
