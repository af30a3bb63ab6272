# SPDX-License-Identifier: GPL-2.0-or-later
"""The control socket and dpoffloadctl against a running daemon: every command, human
and --json, read-only access vs root, the protocol's refusals, and `nat who` from the
durable chunk-event record across a chunk's release and a restart.

Topology, mapping and frames are nat_vlan's (VLANs 100/101 inner, 200 outer, NAT pool
198.51.100.0/30, chunks of 512, 5 s idle). The daemon runs with its own state dir and
control socket (labkit does that for every daemon it starts).
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nat_vlan as nv  # noqa: E402  the topology, frames and helpers
from labkit import start_daemon  # noqa: E402

CTL_TIMEOUT = 30


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Ctl:
    def __init__(self, lab, socket_path):
        self.lab = lab
        self.path = os.path.join(lab.build_dir, "ctl", "dpoffloadctl")
        self.socket = socket_path

    def run(self, *args, user=None):
        argv = [self.path, "--socket", self.socket, *args]
        if user is not None:  # as another user: no supplementary groups, no capabilities
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=CTL_TIMEOUT)

    def json(self, *args):
        r = self.run("--json", *args)
        try:
            return r.returncode, json.loads(r.stdout), r
        except ValueError:
            return r.returncode, None, r


def tc_handles(lab, dev):
    """Our filters (with a handle) on dev's ingress: count, and how many are in_hw."""
    out = lab.sh(["tc", "filter", "show", "dev", dev, "ingress"], ns="hv", check=False).stdout
    blocks = [b for b in re.split(r"\n(?=filter )", out) if " handle " in b.split("\n")[0]]
    return len(blocks), sum("in_hw" in b and "not_in_hw" not in b for b in blocks)


def raw_ask(path, data, read=True):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    deadline = time.monotonic() + 10
    while True:
        try:
            s.connect(path)
            break
        except BlockingIOError:  # the listen backlog is full until the daemon accepts
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    s.sendall(data)
    if not read:
        return s
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return json.loads(out)


def check_status(lab, ctl, version):
    rc, st, r = ctl.json("status")
    if not lab.check("status --json answers", rc == 0 and st is not None, f"rc {rc}: {r.stderr or r.stdout}"):
        return None
    lab.check(f"status: version {st.get('version')} is dpoffloadd --version's, ready after the first reconcile",
              f"dpoffloadd {st.get('version')}" == version and st.get("ready") is True, json.dumps(st)[:400])
    by_dev = st["rules"]["by_device"]
    bad = []
    for dev, c in by_dev.items():
        n, _hw = tc_handles(lab, dev)
        if c["installed"] != n or c["desired"] != c["installed"]:
            bad.append(f"{dev}: daemon desired {c['desired']} installed {c['installed']}, tc has {n}")
    summary = ", ".join(f"{dev} {c['installed']}" for dev, c in by_dev.items())
    lab.check(f"status: rules per device are what tc has ({summary})",
              not bad and "p0" in by_dev, "; ".join(bad) or json.dumps(by_dev))
    t = st["rules"]["total"]
    lab.check("status: totals add up (desired = installed = in_hw + not_in_hw, none refused)",
              t["desired"] == t["installed"] == t["in_hw"] + t["not_in_hw"] and t["refused"] == 0, json.dumps(t))
    lab.check("status: NAT stage running, the record under the state dir, a last reconcile and audit",
              st["nat"]["state"] == "running" and "record" in st["nat"] and "last_reconcile" in st
              and "last_audit" in st and st["kernel"]["routes"] >= 1, json.dumps(st)[:600])
    h = ctl.run("status")
    lab.check("status (human): a table of devices with their states, the NAT line",
              h.returncode == 0 and "DEVICE" in h.stdout and "NOT_IN_HW" in h.stdout and "\np0 " in h.stdout
              and "nat        running" in h.stdout, h.stdout[-800:] + h.stderr)
    lab.note("status:\n" + h.stdout)
    return st


def check_rules(lab, ctl):
    rc, rs, r = ctl.json("rules", "--dev", "p0", "--limit", "0")
    n, _ = tc_handles(lab, "p0")
    if not lab.check(f"rules --dev p0 --limit 0: every rule of p0 ({n}), each with its key and why",
                     rc == 0 and rs and rs["matched"] == n == len(rs["rules"])
                     and all(x.get("key") and x.get("why") and x["state"] == "installed" for x in rs["rules"]),
                     f"rc {rc} {r.stderr} " + json.dumps(rs)[:600] if rs else r.stdout[:300]):
        return
    rc, c0, _r = ctl.json("rules", "--chain", "0", "--limit", "0")
    lab.check("rules --chain 0: only chain 0, the shared ingress rule among them",
              rc == 0 and c0["rules"] and all(x["chain"] == 0 for x in c0["rules"])
              and any(x.get("key") == "devices" for x in c0["rules"]), json.dumps(c0)[:400])
    rc, lim, _r = ctl.json("rules", "--limit", "3")
    lab.check("rules --limit 3: three shown of all that match", rc == 0 and lim["shown"] == 3 and lim["matched"] > 3,
              json.dumps(lim)[:300])
    rc, nh, _r = ctl.json("rules", "--not-in-hw", "--limit", "0")
    want = sum(1 for x in rs["rules"] if not x["in_hw"])
    lab.check(f"rules --not-in-hw: the rules not in hardware (a veth has none in hardware: {want} on p0)",
              rc == 0 and nh["matched"] >= want and all(not x["in_hw"] for x in nh["rules"]), json.dumps(nh)[:300])
    rc, rf, _r = ctl.json("rules", "--refused")
    lab.check("rules --refused: none refused", rc == 0 and rf["matched"] == 0, json.dumps(rf)[:300])
    h = ctl.run("rules", "--dev", "p0", "--limit", "5")
    lab.check("rules (human): STATE HW PACKETS BYTES RULE columns, key: and why: lines",
              h.returncode == 0 and "PACKETS" in h.stdout and "    key: " in h.stdout and "    why: " in h.stdout,
              h.stdout[:600] + h.stderr)
    lab.note("rules --limit 5:\n" + h.stdout)


def check_nat(lab, ctl, run):
    got, c = nv.first_packet(run, nv.SUB_A, 40100, nv.REMOTE, 53, "ctl-first")
    if not lab.check("a first packet of 10.100.0.2 gets it a chunk", got is not None and c is not None, ""):
        return None
    public, lo, hi = c
    t_alloc = time.time()
    rc, subs, _r = ctl.json("nat", "subscribers")
    row = next((s for s in subs["subscribers"] if s["subscriber"] == nv.SUB_A), None) if subs else None
    lab.check(f"nat subscribers: {nv.SUB_A} holds 1 chunk on {public} ({lo}-{hi})",
              rc == 0 and row is not None and row["chunks"] == 1 and row["public"] == public
              and row["ports"] == [f"{lo}-{hi}"], json.dumps(subs)[:400])
    rc, ch, _r = ctl.json("nat", "chunks")
    lab.check("nat chunks: the chunk, its ports and holder",
              rc == 0 and any(x["subscriber"] == nv.SUB_A and x["public"] == public and x["first"] == lo
                              and x["last"] == hi for x in ch["chunks"]), json.dumps(ch)[:400])
    rc, pool, _r = ctl.json("nat", "pool")
    row = next((a for a in pool["pool"] if a["address"] == public), None) if pool else None
    lab.check(f"nat pool: 4 addresses of 2 chunks; {public} has 1 held (50 %)",
              rc == 0 and pool["addresses"] == 4 and pool["chunks"] == 8 and row and row["held"] == 1
              and abs(row["utilisation"] - 0.5) < 1e-9, json.dumps(pool)[:500])
    for what in ("subscribers", "chunks", "pool"):
        h = ctl.run("nat", what)
        lab.check(f"nat {what} (human): a table naming {public}", h.returncode == 0 and public in h.stdout,
                  h.stdout + h.stderr)
        lab.note(f"nat {what}:\n" + h.stdout)
    port = (lo + hi) // 2
    h = ctl.run("nat", "who", f"{public}:{port}")
    lab.check(f"nat who {public}:{port} (now): {nv.SUB_A}, exit 0", h.returncode == 0 and nv.SUB_A in h.stdout,
              f"rc {h.returncode}: {h.stdout}{h.stderr}")
    lab.note("nat who: " + h.stdout.strip())
    before = iso(t_alloc - 3600)
    h = ctl.run("nat", "who", f"{public}:{port}", "--at", before)
    lab.check(f"nat who {public}:{port} --at an hour before: not held (exit 1)",
              h.returncode == 1 and nv.SUB_A not in h.stdout, f"rc {h.returncode}: {h.stdout}{h.stderr}")
    h = ctl.run("nat", "who", f"{public}:{hi + 1 if hi < 2047 else lo - 1}")
    lab.check("nat who of a port in no chunk: exit 1", h.returncode == 1, f"rc {h.returncode}: {h.stdout}{h.stderr}")
    h = ctl.run("nat", "who", f"{public}:{port}", "--at", "yesterday")
    lab.check("nat who --at yesterday: refused, naming the ISO 8601 form",
              h.returncode == 1 and "ISO 8601" in h.stderr, f"rc {h.returncode}: {h.stdout}{h.stderr}")

    rc, ex, _r = ctl.json("explain", nv.SUB_A)
    keys = {k["key"]: k for k in ex["keys"]} if ex else {}
    sub = keys.get(f"subscriber {nv.SUB_A}")
    lab.check(f"explain {nv.SUB_A}: its subscriber key, in the fast path, with its chunk and its route",
              rc == 0 and sub and sub["in_fast_path"] and sub["rules"] and ex.get("nat", {}).get("chunks")
              and any(k.startswith("host ") for k in keys), json.dumps(ex)[:800])
    # Its rule's counter: the first packet went back in through it.
    rc, rs, _r = ctl.json("rules", "--limit", "0")
    mine = [x for x in rs["rules"] if x.get("key") == f"subscriber {nv.SUB_A}"] if rs else []
    lab.check(f"rules: the subscriber rule of {nv.SUB_A} counted the first packet (packets >= 1)",
              mine and sum(x.get("packets", 0) for x in mine) >= 1, json.dumps(mine)[:600])
    h = ctl.run("explain", nv.SUB_A)
    lab.note("explain:\n" + h.stdout)

    # The named counters: the translated first packet left by transit's egress counter.
    rc, cs, r = ctl.json("counters")
    by = {(c["kind"], c["name"]): c for c in cs["counters"]} if cs else {}
    tc_out = lab.sh(["tc", "-s", "actions", "show", "action", "mirred"], ns="hv").stdout
    lab.check("counters: egress by interface name (transit counted the translated packet), drops by reason",
              rc == 0 and by.get(("egress", "transit"), {}).get("packets", 0) >= 1
              and any(k == "drop" for k, _ in by), json.dumps(cs)[:600] if cs else r.stderr)
    h = ctl.run("counters")
    lab.check("counters (human): KIND NAME PACKETS BYTES, no hex index",
              h.returncode == 0 and "KIND" in h.stdout and "transit" in h.stdout and "0xd9" not in h.stdout,
              h.stdout + h.stderr)
    lab.note("counters:\n" + h.stdout + "\n(tc -s actions show action mirred has " +
             str(tc_out.count("index")) + " mirred actions)")
    return public, port, t_alloc


def check_explain(lab, ctl):
    rc, ex, r = ctl.json("explain", "blue")
    lab.check("explain blue: the interface's classify rule, installed",
              rc == 0 and ex["keys"] and ex["keys"][0]["key"] == "classify interface blue"
              and ex["keys"][0]["in_fast_path"], json.dumps(ex)[:500] if ex else r.stderr)
    rc, ex, r = ctl.json("explain", "192.0.2.0/24")
    lab.check("explain 192.0.2.0/24 (no such route): says so, and which route its address takes",
              rc == 0 and any("no route for exactly 192.0.2.0/24" in s for s in ex["says"])
              and any("routed by 0.0.0.0/0" in s for s in ex["says"]), json.dumps(ex)[:500] if ex else r.stderr)
    h = ctl.run("explain", "nonesuch")
    lab.check("explain nonesuch: refused, exit 1, saying what it looked for",
              h.returncode == 1 and "no interface, device, address or prefix" in h.stderr, h.stdout + h.stderr)


def check_audit(lab, ctl, d):
    rc, a, r = ctl.json("audit")
    lab.check("audit (root): a full dump now, drift 0", rc == 0 and a and a["drift"] == 0 and a["dumps"] >= 1,
              f"rc {rc}: {r.stdout}{r.stderr}")
    # Take one of our rules away by hand: after the audit's answer it is back (put back by
    # the tc notification already, or by the audit itself, which then counts drift).
    out = lab.sh(["tc", "filter", "show", "dev", "p0", "ingress", "chain", "0"], ns="hv").stdout
    m = re.search(r"filter protocol (\S+) pref (\d+) flower (?:chain 0 )?handle (0x[0-9a-f]+)", out)
    if not lab.check("a rule of ours in chain 0 to delete", m is not None, out[:400]):
        return
    before = tc_handles(lab, "p0")[0]
    lab.sh(f"tc filter del dev p0 ingress chain 0 pref {m.group(2)} protocol {m.group(1)} handle {m.group(3)} flower",
           ns="hv")
    h = ctl.run("audit")
    after = tc_handles(lab, "p0")[0]
    lab.check(f"audit after a rule was deleted by hand: answered, and the rule is back ({before} rules before, "
              f"{after} after)", h.returncode == 0 and re.search(r"drift (\d+)", h.stdout) and after == before,
              h.stdout + h.stderr)
    lab.note("audit: " + h.stdout.strip())


def check_reload(lab, ctl, config):
    h = ctl.run("reload")
    lab.check("reload of the same file: accepted, exit 0", h.returncode == 0 and "reloaded" in h.stdout,
              h.stdout + h.stderr)
    with open(config) as f:
        good = f.read()
    with open(config, "w") as f:
        f.write(good.replace('"vlan": 101', '"vlan": 4096'))
    h = ctl.run("reload")
    lab.check("reload of a bad file: refused, exit 1, the problem named (vlan 4096) on stderr",
              h.returncode == 1 and "refused" in h.stderr and "4096" in h.stderr, f"rc {h.returncode}: {h.stderr}")
    lab.note("reload refused: " + h.stderr.strip().replace("\n", " | "))
    with open(config, "w") as f:
        f.write(good)
    rc, st, _r = ctl.json("status")
    lab.check("status after the refusal: the running mapping stays (3 interfaces), 1 reload refused",
              rc == 0 and st["mapping"]["interfaces"] == 3 and st["mapping"]["reloads_refused"] == 1,
              json.dumps(st.get("mapping") if st else None))


def check_access(lab, ctl):
    st = os.stat(ctl.socket)
    lab.check("the socket is 0660 (owner and group only)", (st.st_mode & 0o777) == 0o660, oct(st.st_mode))
    h = ctl.run("status", user=65534)
    lab.check("another user without the group cannot connect (exit 3, permission denied)",
              h.returncode == 3 and "Permission denied" in h.stderr, f"rc {h.returncode}: {h.stderr}")
    os.chmod(ctl.socket, 0o666)  # as if the user were in the socket's group
    os.chmod(os.path.dirname(ctl.socket), 0o755)  # as /run/dpoffload is (mkdtemp made it 0700)
    try:
        h = ctl.run("status", user=65534)
        lab.check("a user who may connect may look (status, exit 0)", h.returncode == 0, h.stderr)
        for cmd in ("audit", "reload"):
            h = ctl.run(cmd, user=65534)
            lab.check(f"...but not {cmd}: refused by its credentials, exit 1",
                      h.returncode == 1 and "root only" in h.stderr, f"rc {h.returncode}: {h.stderr}")
    finally:
        os.chmod(ctl.socket, 0o660)


def check_protocol(lab, ctl):
    a = raw_ask(ctl.socket, b"this is not json\n")
    lab.check("protocol: a request that is not JSON is refused", a["ok"] is False and "not a JSON" in a["error"], str(a))
    a = raw_ask(ctl.socket, b'{"version": 2, "command": "status"}\n')
    lab.check("protocol: version 2 is refused, naming the version spoken", a["ok"] is False and "speaks 1" in a["error"],
              str(a))
    a = raw_ask(ctl.socket, b'{"version": 1, "command": "format-disk"}\n')
    lab.check("protocol: an unknown command is refused", a["ok"] is False and "unknown command" in a["error"], str(a))
    a = raw_ask(ctl.socket, b"x" * (70 * 1024))
    lab.check("protocol: a request over 64 KiB is refused", a["ok"] is False and "longer than" in a["error"], str(a))
    # Silent clients hold a slot, not the loop: 20 connections that say nothing, then a status.
    idle = [raw_ask(ctl.socket, b"", read=False) for _ in range(20)]
    t0 = time.monotonic()
    h = ctl.run("status")
    took = time.monotonic() - t0
    for s in idle:
        s.close()
    lab.check(f"20 silent connections (16 slots) do not stall the daemon: status answered after they "
              f"left or timed out ({took:.1f} s)", h.returncode == 0, h.stderr)
    h = ctl.run("bogus")
    lab.check("dpoffloadctl bogus: usage, exit 2", h.returncode == 2 and "usage:" in h.stderr, h.stderr)


def check_release_and_restart(lab, ctl, run, config, public, port, t_alloc):
    d = run.daemon
    # Its connection ends (as conntrack's timeout would end it, later): the chunk goes idle.
    lab.sh(["conntrack", "-D", "-w", str(nv.ZONE), "-s", nv.SUB_A], ns="hv", check=False)
    fields, line, _i = d.wait_event("chunk-released", lambda f: f.get("subscriber") == nv.SUB_A,
                                    nv.IDLE_S + nv.RELEASE_SLACK + 10, 0)
    if not lab.check(f"the chunk of {nv.SUB_A} is released once idle", fields is not None, line):
        return
    t_rel = time.time()
    h = ctl.run("nat", "who", f"{public}:{port}")
    lab.check("nat who now: nobody (free since the release, last held by the subscriber), exit 1",
              h.returncode == 1 and "nobody" in h.stdout and nv.SUB_A in h.stdout, h.stdout + h.stderr)
    during = iso(t_alloc + 1) if t_alloc + 1 < t_rel - 1 else iso(t_alloc)
    h = ctl.run("nat", "who", f"{public}:{port}", "--at", during)
    lab.check(f"nat who --at {during} (while it was held): {nv.SUB_A}", h.returncode == 0 and nv.SUB_A in h.stdout,
              h.stdout + h.stderr)
    # A restart keeps the record: the next daemon answers for the last one's time.
    state_dir = d.state_dir
    d.stop()
    run.daemon, rec = start_daemon(lab, config, "ctl-again", timeout=nv.START_TIMEOUT,
                                   args=("--state-dir", state_dir, "--control-socket", ctl.socket))
    run.daemons.append(run.daemon)
    if not lab.check("restarted with the same state dir", rec is not None, ""):
        return
    h = ctl.run("nat", "who", f"{public}:{port}", "--at", during)
    lab.check(f"after a restart, nat who --at {during}: still {nv.SUB_A} (the record is on disk)",
              h.returncode == 0 and nv.SUB_A in h.stdout, h.stdout + h.stderr)
    lab.check("the restart installed nothing (messages=0)", rec.get("messages") == "0", rec.get("_line", ""))


def run(lab):
    if not lab.check("dpoffloadd and dpoffloadctl built (--build-dir)",
                     lab.daemon_path() is not None and os.access(os.path.join(lab.build_dir, "ctl", "dpoffloadctl"),
                                                                 os.X_OK),
                     f"under {lab.build_dir}"):
        return
    nv.setup(lab)
    fd, config = tempfile.mkstemp(prefix="control-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(nv.MAPPING)
    os.chmod(config, 0o644)
    run_ = nv.Run(lab, config)
    try:
        run_.daemon, rec = nv.start(lab, config, "ctl")
        run_.daemons.append(run_.daemon)
        if rec is None:
            return
        ctl = Ctl(lab, run_.daemon.control_socket)
        version = subprocess.run([lab.daemon_path(), "--version"], capture_output=True, text=True).stdout.strip()
        v = ctl.run("--version")
        lab.check("dpoffloadctl --version is dpoffloadd's version", v.stdout.strip().split()[-1] == version.split()[-1],
                  v.stdout + version)
        if check_status(lab, ctl, version) is None:
            return
        check_rules(lab, ctl)
        check_explain(lab, ctl)
        got = check_nat(lab, ctl, run_)
        check_audit(lab, ctl, run_.daemon)
        check_reload(lab, ctl, config)
        check_access(lab, ctl)
        check_protocol(lab, ctl)
        if got:
            check_release_and_restart(lab, ctl, run_, config, *got)
    finally:
        for d in run_.daemons:
            d.stop()
            d.kill()
        lab.sh(["ip", "netns", "exec", "hv", lab.daemon_path(), "--flush", "--config", config], check=False)
