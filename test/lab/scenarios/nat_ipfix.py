# SPDX-License-Identifier: GPL-2.0-or-later
"""NAT event export over IPFIX (RFC 7011, RFC 8158 templates), decoded by collectors no code
of ours wrote: nfdump's nfcapd receives and stores (nfdump -o raw shows natEvent, subscriber,
public address and event time; nfdump 1.7.1 does not decode portRangeStart/End from IPFIX), and
Wireshark's IPFIX dissector (tshark, on a capture of the collectors' port) decodes every field.

The network is nat_vlan's (fabric netns -- veth -- hv netns with p0.100/p0.101/p0.200, kernel
forwarding off). The daemon in hv exports to two collectors inside hv: nfcapd on 127.0.0.1:4739
and nfcapd on [::1]:4740, each a stream of its own. The mapping is small so that every kind of
event is reachable: pool 198.51.100.0/31 (2 addresses x 2 chunks of 512), one chunk per
subscriber, 3 s idle, templates refreshed every 4 s.

Events driven: first packets of four subscribers (natEvent 16), one subscriber's chunk filled
over ctnetlink at its limit (quota exceeded, natEvent 13), a fifth subscriber's first packet with
the pool empty (addresses exhausted, natEvent 3), conntrack deleted (every chunk idle: natEvent
17), then a SIGHUP that drops a collector and changes the observation domain (no restart of the
NAT stage; the new domain's stream starts with templates at sequence 0) and one more refusal.
A third collector, 127.0.0.1:4741, has nobody listening: its sends fail (ICMP port unreachable)
and are told once, without disturbing the others.

Checked: every chunk-allocated / chunk-released / nat-refused line of the journal (stderr) has
its record, field by field, at each collector, and no record lacks its line; sequence numbers
count data records per collector and domain without a gap; the templates lead each stream and
are sent again at the refresh interval.
"""

import datetime
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from scapy.layers.inet import IP

from labkit import parse_log_line, start_daemon

_spec = importlib.util.spec_from_file_location("nat_vlan_for_ipfix", Path(__file__).with_name("nat_vlan.py"))
nv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nv)

C4 = ("127.0.0.1", 4739)
C6 = ("::1", 4740)
DEAD = ("127.0.0.1", 4741)   # nobody listens: ICMP port unreachable, the send after it fails
REFRESH_S = 4
IDLE_S = 3
MAPPING = """{
  "uplink": "p0",
  "interfaces": [
    { "name": "blue",    "netdev": "p0.100", "role": "inner", "vlan": 100 },
    { "name": "red",     "netdev": "p0.101", "role": "inner", "vlan": 101 },
    { "name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200 }
  ],
  "nat": { "zone": 1, "pool": ["198.51.100.0/31"], "ports": { "first": 1024, "last": 2047 },
           "chunk_size": 512, "max_chunks_per_subscriber": 1, "chunk_idle_seconds": %(idle)d,
           "logging": { "collectors": [%(collectors)s],
                        "template_refresh_seconds": %(refresh)d, "observation_domain_id": %(domain)d } }
}
"""
NAT_EVENT = {"chunk-allocated": 16, "chunk-released": 17, "chunk-limit": 13, "pool-empty": 3}
SUB_D, SUB_E, SUB_F = "10.100.0.4", "10.100.0.5", "10.100.0.6"
COLLECTOR_TIMEOUT = 60.0   # nfcapd / dumpcap listening (dumpcap probes every interface type first: ~10 s under TCG)
DECODE_TIMEOUT = 300       # tshark on the whole capture under emulation


def mapping(collectors, domain):
    return MAPPING % {"idle": IDLE_S, "refresh": REFRESH_S, "domain": domain,
                      "collectors": ", ".join(f'"{c}"' for c in collectors)}


def collector_str(c):
    return f"[{c[0]}]:{c[1]}" if ":" in c[0] else f"{c[0]}:{c[1]}"


def wait_for(pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


class Collectors:
    """nfcapd on each collector address and a dumpcap of both ports, all in the hv netns."""

    def __init__(self, lab):
        self.lab = lab
        self.dir = tempfile.mkdtemp(prefix="nat_ipfix-")
        self.procs = []
        self.pcap = os.path.join(self.dir, "ipfix.pcapng")
        self.nf_dirs = {}

    def start(self):
        lab = self.lab
        for host, port in (C4, C6):
            d = os.path.join(self.dir, f"nfcapd-{port}")
            os.mkdir(d)
            self.nf_dirs[port] = d
            args = ["nfcapd", "-b", host, "-p", str(port), "-w", d, "-t", "3600"]
            if ":" in host:
                args.insert(1, "-6")
            log = open(os.path.join(self.dir, f"nfcapd-{port}.log"), "w")
            self.procs.append(("nfcapd", port, subprocess.Popen(["ip", "netns", "exec", "hv", *args],
                                                                stdout=log, stderr=log)))
        listening = lambda: all(  # noqa: E731
            re.search(rf"[\]:]{p}\b", lab.sh(["ss", "-Hluan"], ns="hv").stdout) for p in (C4[1], C6[1]))
        ok_nf = wait_for(listening, COLLECTOR_TIMEOUT)
        err = open(os.path.join(self.dir, "dumpcap.log"), "w")
        self.procs.append(("dumpcap", 0, subprocess.Popen(
            ["ip", "netns", "exec", "hv", "dumpcap", "-q", "-i", "lo", "-f", f"udp port {C4[1]} or udp port {C6[1]}",
             "-w", self.pcap], stdout=err, stderr=err)))
        ok_cap = wait_for(lambda: "Capturing on" in open(os.path.join(self.dir, "dumpcap.log")).read(),
                          COLLECTOR_TIMEOUT)
        lab.check(f"collectors up in hv: nfcapd on {collector_str(C4)} and {collector_str(C6)}, dumpcap on lo",
                  ok_nf and ok_cap, f"nfcapd listening: {bool(ok_nf)}; dumpcap: "
                  f"{open(os.path.join(self.dir, 'dumpcap.log')).read().strip()[-200:]}")
        return ok_nf and ok_cap

    def stop(self):
        """SIGTERM: nfcapd writes its file, dumpcap closes the capture."""
        for _name, _port, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _name, _port, p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- decoding (not ours)

def tshark_messages(lab, pcap):
    """Every IPFIX message in the capture, as Wireshark decodes it: [{port, time, od, seq, templates:
    {id: [element ids]}, records: [(template id, {field: value})]}]."""
    r = lab.sh(["tshark", "-n", "-r", pcap, "-d", f"udp.port=={C6[1]},cflow", "-T", "pdml"], check=False,
               timeout=DECODE_TIMEOUT)
    if r.returncode != 0:
        return None, f"tshark exit {r.returncode}: {r.stderr.strip()[-300:]}"
    out = []
    for pkt in ET.fromstring(r.stdout).iter("packet"):
        udp = {f.get("name"): f.get("show") for f in pkt.iter("field") if f.get("name", "").startswith("udp.")}
        frame = {f.get("name"): f.get("show") for f in pkt.iter("field") if f.get("name") == "frame.time_epoch"}
        cf = next((p for p in pkt.findall("proto") if p.get("name") == "cflow"), None)
        if cf is None:
            continue
        m = {"port": int(udp.get("udp.dstport", 0)), "time": float(frame.get("frame.time_epoch", 0)),
             "version": None, "od": None, "seq": None, "templates": {}, "records": []}
        for f in cf:
            name, show = f.get("name"), f.get("show") or ""
            if name == "cflow.version":
                m["version"] = int(show)
            elif name == "cflow.od_id":
                m["od"] = int(show)
            elif name == "cflow.sequence":
                m["seq"] = int(show)
            elif name == "" and show.startswith("Set "):
                set_id = int(next(x.get("show") for x in f if x.get("name") == "cflow.flowset_id"))
                if set_id == 2:
                    for t in f:
                        if (t.get("show") or "").startswith("Template (Id"):
                            tid = int(next(x.get("show") for x in t if x.get("name") == "cflow.template_id"))
                            m["templates"][tid] = [int(x.get("value")[:4], 16) for x in t
                                                   if (x.get("show") or "").startswith("Field (")]
                    continue
                for flow in f:
                    if not (flow.get("show") or "").startswith("Flow "):
                        continue
                    rec = {}
                    for x in flow:
                        n = (x.get("name") or "").removeprefix("cflow.")
                        # The raw value for time (ms since the epoch), the shown one for the rest.
                        rec[n] = int(x.get("value"), 16) if n == "observation_time_milliseconds" else x.get("show")
                    m["records"].append((set_id, rec))
        out.append(m)
    return out, ""


def nfdump_records(lab, d):
    """nfdump -o raw of what nfcapd stored: [{nat event, src addr, src xlt ip, event time ms}]."""
    r = lab.sh(["nfdump", "-R", d, "-o", "raw"], check=False, timeout=120)
    recs = []
    for block in r.stdout.split("Flow Record:")[1:]:
        kv = {}
        for line in block.splitlines():
            k, sep, v = line.partition("=")
            if sep:
                kv[k.strip()] = v.strip()
        recs.append({"event": int(kv.get("nat event", "0").split(":")[0] or 0), "sub": kv.get("src addr"),
                     "public": kv.get("src xlt ip"), "ms": int((kv.get("Event time") or "0").split()[0])})
    return recs, f"nfdump exit {r.returncode}: {r.stderr.strip()[-200:]}"


# ---------------------------------------------------------------- the journal

def journal_events(d):
    """(event line name, natEvent, subscriber, public, lo, hi, unix second) from the daemon's stderr."""
    out = []
    for line in d.lines():
        ev, f = parse_log_line(line)
        if ev in ("chunk-allocated", "chunk-released"):
            _s, public, lo, hi = nv.chunk(f)
            t = datetime.datetime.strptime(f["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
            out.append((ev, NAT_EVENT[ev], f["subscriber"], public, lo, hi, int(t.timestamp())))
        elif ev == "nat-refused":
            # RFC 8158's addresses-exhausted record names the pool, not the subscriber who found it empty.
            sub = f["subscriber"] if f["reason"] == "chunk-limit" else None
            out.append((ev, NAT_EVENT[f["reason"]], sub, None, None, None, None))
    return out


def record_key(tid, rec):
    """A decoded record in the journal's terms: (natEvent, subscriber, public, lo, hi)."""
    ev = int(rec.get("nat_event", 0))
    if tid == 256:
        return (ev, rec.get("srcaddr"), rec.get("post_natsource_ipv4_address"),
                int(rec.get("port_range_start", -1)), int(rec.get("port_range_end", -1)))
    if tid == 257:
        return (ev, rec.get("srcaddr"), None, None, None)
    return (ev, None, None, None, None)


# ---------------------------------------------------------------- driving events

def first_packet(lab, d, sub, sport, tag):
    """A first packet: translated on the wire, and its chunk-allocated line (or None, why)."""
    payload = f"dpo-ipfix first {tag}".encode()
    since = len(d.lines())
    got, _t, others = nv.send_get(lab, nv.inner_udp(sub, sport, nv.REMOTE, 53, payload), nv.has_payload(payload),
                                  timeout=nv.FIRST_TIMEOUT)
    fields, why, _i = d.wait_event("chunk-allocated", lambda f: f.get("subscriber") == sub, 3.0, since)
    ok = got is not None and fields is not None and got[IP].src == fields.get("public")
    lab.check(f"{tag}: first packet of {sub} translated on the wire into its chunk "
              f"({why.strip() if fields else 'no chunk line'})", ok,
              f"on the wire: {nv.describe(got) if got is not None else others}; log: {why}")
    return fields


def refused_first_packet(lab, d, sub, tag):
    payload = f"dpo-ipfix refused {tag}".encode()
    since = len(d.lines())
    leaked = nv.send_none(lab, [nv.inner_udp(sub, 41000, nv.REMOTE, 53, payload)], nv.has_payload(payload))
    fields, why, _i = d.wait_event("nat-refused", lambda f: f.get("subscriber") == sub, 3.0, since)
    lab.check(f"{tag}: first packet of {sub} dropped with the pool empty, refusal logged "
              f"({why.strip() if fields else 'none'})",
              leaked is None and fields is not None and fields.get("reason") == "pool-empty", why)


def fill_at_limit(lab, d, sub, c):
    """Fills `sub`'s only chunk with ctnetlink-made connections: at its limit, a quota refusal."""
    since = len(d.lines())
    made, err = nv.ct_insert(lab, [(sub, 50000 + i, nv.FAKE_REMOTE, 53, c[1], c[2] + i) for i in range(nv.CHUNK_SIZE)])
    fields, why, _i = d.wait_event("nat-refused", lambda f: f.get("subscriber") == sub, 10.0, since)
    lab.check(f"quota: {sub}'s only chunk filled ({made} connections over ctnetlink): refusal logged "
              f"({why.strip() if fields else 'none'})",
              made == nv.CHUNK_SIZE and fields is not None and fields.get("reason") == "chunk-limit",
              f"made {made} ({err}); {why}")


# ---------------------------------------------------------------- checks on the decoded export

def streams_of(messages):
    s = {}
    for m in messages:
        s.setdefault((m["port"], m["od"]), []).append(m)
    return s


def check_sequences(lab, streams):
    for (port, od), ms in sorted(streams.items()):
        count, bad = 0, []
        for i, m in enumerate(ms):
            if m["version"] != 10 or m["seq"] != count:
                bad.append(f"message {i}: version {m['version']} sequence {m['seq']}, want {count}")
            count += len(m["records"])
        lab.check(f"port {port} domain {od}: {len(ms)} messages, sequence numbers count the {count} data "
                  "records before each message (no gap)", not bad, "; ".join(bad[:4]))


def check_templates(lab, streams, refresh_window):
    want = {256: [323, 230, 8, 225, 361, 362], 257: [323, 230, 466, 473, 8], 258: [323, 230, 283]}
    for (port, od), ms in sorted(streams.items()):
        first_data = next((i for i, m in enumerate(ms) if m["records"]), None)
        with_t = [m for m in ms if m["templates"]]
        lead = first_data is not None and any(m["templates"] == want for m in ms[:first_data + 1])
        lab.check(f"port {port} domain {od}: the templates (256 port block, 257 quota exceeded, 258 addresses "
                  f"exhausted, RFC 8158's elements) come before the first data record",
                  lead and all(m["templates"] == want for m in with_t),
                  f"first data in message {first_data}; template sets: {[m['templates'] for m in with_t][:2]}")
        if (port, od) in refresh_window:
            t0, t1 = refresh_window[(port, od)]
            times = [m["time"] for m in with_t if t0 <= m["time"] <= t1]
            gaps = [b - a for a, b in zip(times, times[1:])]
            lab.check(f"port {port} domain {od}: templates sent again every {REFRESH_S} s "
                      f"({len(times)} template sets in {t1 - t0:.0f} s; gaps {[round(g, 1) for g in gaps[:6]]})",
                      len(times) >= 3 and all(REFRESH_S - 1 <= g <= REFRESH_S + 2 for g in gaps),
                      f"template set times {times}")


def check_records(lab, journal, streams, port, od, what):
    """Every journal event of `journal` has exactly one record in stream (port, od) and no record
    lacks its journal line; fields and the event time agree."""
    ms = streams.get((port, od), [])
    recs = [(tid, r) for m in ms for tid, r in m["records"]]
    want = sorted(j[1:6] for j in journal)
    got = sorted(record_key(tid, r) for tid, r in recs)
    missing = [w for w in want if w not in got]
    extra = [g for g in got if g not in want]
    kinds = {}
    for j in journal:
        kinds[j[1]] = kinds.get(j[1], 0) + 1
    lab.check(f"{what}: every one of the {len(journal)} journal events (natEvent count {dict(sorted(kinds.items()))}) "
              f"arrived at {port} (domain {od}) and was decoded by tshark, field by field, and nothing else did",
              not missing and not extra and len(got) == len(want),
              f"missing (natEvent, subscriber, public, start, end): {missing[:4]}; unexpected: {extra[:4]}")
    # Time: the record's observationTimeMilliseconds falls in the journal line's second.
    skew = []
    for j in journal:
        if j[6] is None:
            continue
        times = [r["observation_time_milliseconds"] for tid, r in recs if record_key(tid, r) == j[1:6]]
        if not times or all(t // 1000 != j[6] for t in times):
            skew.append((j[:3], j[6], times[:2]))
    lab.check(f"{what}: each port-block record's observationTimeMilliseconds is within its journal line's second",
              not skew, f"{skew[:3]}")
    for tid, r in recs:
        if tid == 257 and (r.get("nat_quota_exceeded_event") != "3" or r.get("max_entries_per_user") != "1"):
            lab.check(f"{what}: quota record says natQuotaExceededEvent 3 (max entries per user) and the limit 1",
                      False, f"{r}")
            break
        if tid == 258 and r.get("nat_pool_id") != "1":
            lab.check(f"{what}: addresses-exhausted record says natPoolId 1", False, f"{r}")
            break


def check_nfdump(lab, journal, recs, port, what):
    got = sorted((r["event"], r["sub"] if r["event"] != 3 else None, r["public"] if r["event"] in (16, 17) else None)
                 for r in recs)
    want = sorted((j[1], j[2] if j[1] != 3 else None, j[3]) for j in journal)
    lab.check(f"{what}: nfcapd on port {port} stored {len(recs)} records; nfdump reads natEvent, subscriber and "
              f"public address of every journal event ({len(want)})", got == want,
              f"nfdump: {got[:6]}; journal: {want[:6]}")


# ---------------------------------------------------------------- the scenario

def run(lab):
    if not lab.check("dpoffloadd built (--build-dir)", lab.daemon_path() is not None,
                     f"no executable agent/dpoffloadd under {lab.build_dir}"):
        return
    for tool in ("nfcapd", "nfdump", "tshark", "dumpcap"):
        if not lab.check(f"{tool} installed (scripts/setup.sh)", shutil.which(tool) is not None, "not on PATH"):
            return
    nv.setup(lab)
    for host in range(4, 7):
        sub = f"10.100.0.{host}"
        nv.SUB_MAC[sub], nv.SUB_VLAN[sub] = f"02:00:00:00:01:{host:02x}", 100
    col = Collectors(lab)
    fd, config = tempfile.mkstemp(prefix="nat_ipfix-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(mapping([collector_str(C4), collector_str(C6), collector_str(DEAD)], 1))
    d = None
    try:
        if not col.start():
            return
        d, rec = start_daemon(lab, config, "ipfix", timeout=nv.START_TIMEOUT)
        if rec is None:
            return
        t_start = time.time()
        ex = d.events("ipfix-exporting")
        lab.check(f"daemon exports to the three collectors ({ex[0] if ex else 'no ipfix-exporting line'})",
                  ex and ex[0].get("collectors") == f"{collector_str(C4)},{collector_str(C6)},{collector_str(DEAD)}",
                  d.tail())

        a = first_packet(lab, d, nv.SUB_A, 40000, "A")
        first_packet(lab, d, nv.SUB_B, 40000, "B")
        first_packet(lab, d, nv.SUB_R, 40000, "R")
        if a:
            _s, public, lo, _hi = nv.chunk(a)
            fill_at_limit(lab, d, nv.SUB_A, (nv.SUB_A, public, lo))
        first_packet(lab, d, SUB_D, 40000, "D (the pool's last chunk)")
        refused_first_packet(lab, d, SUB_E, "E")
        # Every connection gone: every chunk goes idle and back (into quarantine).
        since = len(d.lines())
        lab.sh(["conntrack", "-D", "-w", str(nv.ZONE)], ns="hv", check=False)
        held = {s for e, _n, s, *_r in journal_events(d) if e == "chunk-allocated"}
        released = wait_for(lambda: {f.get("subscriber") for f in d.events("chunk-released", since)} >= held,
                            IDLE_S + 6)
        lab.check(f"idle release: every chunk ({len(held)}) released within {IDLE_S}+6 s of conntrack -D",
                  released, f"released: {d.events('chunk-released', since)}")
        # The refresh: the first template set and three more on each domain 1 stream before the reload.
        refreshed = lambda: all(len(lab.sh(  # noqa: E731
            ["tshark", "-n", "-r", col.pcap, "-d", f"udp.port=={C6[1]},cflow", "-Y",
             f"udp.dstport == {port} && cflow.od_id == 1 && cflow.flowset_id == 2", "-T", "fields", "-e",
             "frame.number"], check=False, timeout=120).stdout.split()) >= 4 for port in (C4[1], C6[1]))
        lab.note(f"four template sets seen on each stream {'' if wait_for(refreshed, 60, step=1.0) else 'NOT '}"
                 f"within 60 s")
        t_reload = time.time()
        before_reload = journal_events(d)
        with open(config, "w") as f:
            f.write(mapping([collector_str(C4)], 2))
        since = len(d.lines())
        d.proc.send_signal(signal.SIGHUP)
        fields, why, _i = d.wait_event("reloaded", lambda f: True, 10.0, since)
        ex = d.events("ipfix-exporting", since)
        lab.check(f"reload (SIGHUP) with one collector and domain 2 takes effect "
                  f"({ex[-1] if ex else 'no ipfix-exporting line'}) without restarting the NAT stage",
                  fields is not None and ex and ex[-1].get("collectors") == collector_str(C4)
                  and ex[-1].get("observation_domain") == "2" and not d.events("nat-running", since),
                  f"{why}; since the SIGHUP: {' | '.join(d.lines()[since:][-5:])}")
        refused_first_packet(lab, d, SUB_F, "F after reload")
        t_end = time.time()
        # The last record (domain 2's refusal) in the capture file before dumpcap stops.
        last = lambda: lab.sh(["tshark", "-n", "-r", col.pcap, "-Y", "cflow.od_id == 2 && cflow.nat_event == 3",  # noqa: E731
                               "-T", "fields", "-e", "frame.number"], check=False, timeout=120).stdout.strip()
        lab.note(f"capture holds domain 2's refusal: frame {wait_for(last, 90, step=1.0) or 'none within 90 s'}")
        failures = d.events("ipfix-send-failed")
        lab.check(f"sends to {collector_str(DEAD)} (nobody listening) fail and are told once "
                  f"({failures[0] if failures else 'no ipfix-send-failed line'}); none to the collectors that listen",
                  len(failures) == 1 and failures[0].get("collector") == collector_str(DEAD)
                  and "refused" in failures[0].get("error", ""), f"{failures[:3]}")
        d.stop()
        col.stop()

        messages, why = tshark_messages(lab, col.pcap)
        if not lab.check(f"tshark decoded the capture ({len(messages or [])} IPFIX messages)", messages, why):
            return
        streams = streams_of(messages)
        lab.note("streams (port, domain): " + ", ".join(
            f"{k}: {len(v)} messages, {sum(len(m['records']) for m in v)} records" for k, v in sorted(streams.items())))
        after_reload = journal_events(d)[len(before_reload):]
        check_sequences(lab, streams)
        check_templates(lab, streams, {(C4[1], 1): (t_start, t_reload), (C6[1], 1): (t_start, t_reload)})
        check_records(lab, before_reload, streams, C4[1], 1, "before the reload, IPv4 collector")
        check_records(lab, before_reload, streams, C6[1], 1, "before the reload, IPv6 collector")
        check_records(lab, after_reload, streams, C4[1], 2, "after the reload, IPv4 collector, domain 2")
        late = [m for m in streams.get((C6[1], 1), []) if m["time"] > t_reload + 1] + streams.get((C6[1], 2), [])
        lab.check("after the reload the dropped collector gets nothing more", not late,
                  f"{len(late)} messages after the reload")
        lab.check("journal: every kind of event happened (16, 17, 13, 3)",
                  {j[1] for j in before_reload} >= {16, 17, 13, 3}, f"{sorted({j[1] for j in before_reload})}")
        for port in (C4[1], C6[1]):
            recs, why = nfdump_records(lab, col.nf_dirs[port])
            journal = before_reload + (after_reload if port == C4[1] else [])
            check_nfdump(lab, journal, recs, port, "nfdump")
        lab.note(f"journal events: {len(before_reload)} before the reload, {len(after_reload)} after; "
                 f"span {t_end - t_start:.0f} s")
    finally:
        try:
            if lab.failed and d is not None:
                for line in d.lines()[-40:]:
                    print(f"  | {line}", flush=True)
        finally:
            if d is not None:
                d.kill()
            col.cleanup()
            os.unlink(config)
