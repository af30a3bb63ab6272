# SPDX-License-Identifier: GPL-2.0-or-later
"""Prometheus metrics (docs/metrics.md) and the named counters behind them
(kernel/action_stats.hpp), on nat_vlan's hypervisor: dpoffloadd runs with
`--metrics 127.0.0.1:PORT` in the hv netns, and every check scrapes /metrics there with
urllib and parses the text exposition with a strict parser of its own (every sample
under a TYPE, label syntax and escapes, no duplicate series, cumulative buckets that end
in +Inf = _count).

    fabric netns                      hv netns (dpoffloadd --metrics 127.0.0.1:9641)
    fab0  <------------ veth ------------>  p0   +- p0.100 blue  +- p0.101 red  +- p0.200 transit

What is checked against what the kernel says:
  - rules by device and state = `tc filter show` of each device (count, in_hw / not_in_hw);
  - N frames routed blue -> red by tc: the egress counter of `red` (vlan 101 on p0) grows
    by N, and equals the shared mirred's `tc -s actions` numbers;
  - a NAT first packet: punts +1, chunk allocations +1, one latency observation, pool
    utilisation of its public address 1/2;
  - unsolicited outer packets: drops{reason="outer-new"} + what was sent;
  - kernel::counters() (build/test/counters-probe) = `tc -s actions show action gact|mirred`
    for every shared action of ours, and = what the scrape says.
Counters are compared as deltas around traffic this scenario sends; nothing else sends
on these namespaces (IPv6 is off on fab0, neighbours are static).
"""

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nat_vlan as nv  # noqa: E402  the topology, frames and helpers
from labkit import DaemonProcess  # noqa: E402

PORT = 9641
URL = f"http://127.0.0.1:{PORT}/metrics"
ROUTED = 20                # frames blue -> red
UNSOLICITED = 5            # outer frames nobody asked for
REFRESH_TIMEOUT = 5.0      # the loop refreshes what it computes at most once a second
SCRAPE_TIMEOUT = 10.0
VLAN_BASE = 0xd9000000
VXLAN_BASE = 0xda000000
OURS = (0xd9000000, 0xdb000000)  # every shared index the compiler gives (pipeline.hpp)


# ---------------------------------------------------------------- the exposition

class ExpositionError(ValueError):
    pass


NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf"^({NAME})(?:\{{(.*)\}})? (\S+)(?: (-?\d+))?$")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def _unescape(v):
    out, i = [], 0
    while i < len(v):
        if v[i] == "\\":
            nxt = v[i + 1] if i + 1 < len(v) else ""
            if nxt not in ('\\', '"', 'n'):
                raise ExpositionError(f"bad escape \\{nxt} in label value {v!r}")
            out.append("\n" if nxt == "n" else nxt)
            i += 2
        else:
            out.append(v[i])
            i += 1
    return "".join(out)


def _labels(text):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        if not m:
            raise ExpositionError(f"bad labels at {text[pos:]!r}")
        if m.group(1) in labels:
            raise ExpositionError(f"label {m.group(1)} twice")
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


def _value(s):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    try:
        return float(s)
    except ValueError:
        raise ExpositionError(f"bad value {s!r}") from None


def parse_exposition(text):
    """Text format 0.0.4 -> (types {family: type}, samples {(name, frozenset(labels)): value}).
    Raises ExpositionError on anything the format does not allow."""
    types, helps, samples = {}, {}, {}
    seen_families = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not re.fullmatch(NAME, name):
                    raise ExpositionError(f"line {n}: bad metric name {name!r}")
                if parts[1] == "TYPE":
                    t = parts[3] if len(parts) > 3 else ""
                    if t not in ("counter", "gauge", "histogram", "summary", "untyped"):
                        raise ExpositionError(f"line {n}: bad type {t!r}")
                    if name in types:
                        raise ExpositionError(f"line {n}: TYPE of {name} twice")
                    types[name] = t
                    seen_families.append(name)
                else:
                    if name in helps:
                        raise ExpositionError(f"line {n}: HELP of {name} twice")
                    helps[name] = parts[3] if len(parts) > 3 else ""
            continue
        m = SAMPLE.match(line)
        if not m:
            raise ExpositionError(f"line {n}: not a sample: {line!r}")
        name, labels, value = m.group(1), _labels(m.group(2) or ""), _value(m.group(3))
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[:-len(suffix)]) in ("histogram", "summary"):
                family = name[:-len(suffix)]
        if family not in types:
            raise ExpositionError(f"line {n}: sample {name} has no TYPE before it")
        if seen_families[-1] != family:
            raise ExpositionError(f"line {n}: sample {name} is not under its family's TYPE (interleaved)")
        if types[family] == "counter" and (value < 0 or math.isnan(value)):
            raise ExpositionError(f"line {n}: counter {name} is {value}")
        key = (name, frozenset(labels.items()))
        if key in samples:
            raise ExpositionError(f"line {n}: series {name}{labels} twice")
        samples[key] = value
    # Histograms: buckets cumulative, +Inf present and equal to _count.
    for family, t in types.items():
        if t != "histogram":
            continue
        series = {}
        for (name, labels), v in samples.items():
            if name == family + "_bucket":
                d = dict(labels)
                le = d.pop("le", None)
                if le is None:
                    raise ExpositionError(f"{family}: a bucket without le")
                series.setdefault(frozenset(d.items()), []).append((_value(le), v))
        for labels, buckets in series.items():
            buckets.sort()
            counts = [c for _le, c in buckets]
            if counts != sorted(counts):
                raise ExpositionError(f"{family}{dict(labels)}: buckets not cumulative {buckets}")
            if buckets[-1][0] != float("inf"):
                raise ExpositionError(f"{family}{dict(labels)}: no +Inf bucket")
            if samples.get((family + "_count", labels)) != buckets[-1][1]:
                raise ExpositionError(f"{family}{dict(labels)}: _count != +Inf bucket")
    return types, samples


class Scrape:
    def __init__(self, types, samples, content_type):
        self.types, self.samples, self.content_type = types, samples, content_type

    def get(self, name, **labels):
        """The value of the one series of `name` whose labels include `labels` (None: none)."""
        hits = [v for (n, ls), v in self.samples.items() if n == name and set(labels.items()) <= set(ls)]
        if len(hits) > 1:
            raise AssertionError(f"{name}{labels}: {len(hits)} series match")
        return hits[0] if hits else None

    def series(self, name):
        return [(dict(ls), v) for (n, ls), v in self.samples.items() if n == name]


def scrape(lab):
    """(Scrape or None, error text)."""
    try:
        with lab.netns("hv"):
            with urllib.request.urlopen(URL, timeout=SCRAPE_TIMEOUT) as r:
                body = r.read().decode()
                ctype = r.headers.get("Content-Type", "")
                status = r.status
    except OSError as e:
        return None, f"GET {URL}: {e}"
    if status != 200:
        return None, f"GET {URL}: HTTP {status}"
    try:
        types, samples = parse_exposition(body)
    except ExpositionError as e:
        return None, f"exposition refused: {e}"
    return Scrape(types, samples, ctype), ""


def scrape_until(lab, pred, timeout=REFRESH_TIMEOUT):
    """Scrape until pred(scrape) holds or the deadline passes: (last scrape, ok, error)."""
    deadline = time.monotonic() + timeout
    last, err = None, ""
    while True:
        s, err = scrape(lab)
        if s is not None:
            last = s
            if pred(s):
                return s, True, ""
        if time.monotonic() >= deadline:
            return last, False, err
        time.sleep(0.2)  # the poll's pace, not a wait for a condition


# ---------------------------------------------------------------- what tc says

def tc_filters(lab, dev):
    """{"installed": n, "in_hw": n, "not_in_hw": n} of the device's ingress filters."""
    r = lab.sh(["tc", "filter", "show", "dev", dev, "ingress"], ns="hv", check=False)
    blocks, cur = [], None
    for line in r.stdout.splitlines():
        if line.startswith("filter "):
            cur = [line]
            blocks.append(cur)
        elif cur is not None:
            cur.append(line)
    out = {"installed": 0, "in_hw": 0, "not_in_hw": 0}
    for b in blocks:
        if " handle " not in b[0]:
            continue
        out["installed"] += 1
        text = "\n".join(b)
        if re.search(r"\bnot_in_hw\b", text):
            out["not_in_hw"] += 1
        elif re.search(r"\bin_hw\b", text):
            out["in_hw"] += 1
    return out


def tc_actions(lab, kind):
    """index -> (packets, bytes) of every action of `kind`, from `tc -s actions show`."""
    r = lab.sh(["tc", "-s", "actions", "show", "action", kind], ns="hv", check=False)
    out = {}
    for block in re.split(r"\n\s*action order \d+: ", "\n" + r.stdout)[1:]:
        mi = re.search(r"\bindex (\d+)", block)
        ms = re.search(r"Sent (\d+) bytes (\d+) pkt", block)
        if mi and ms:
            out[int(mi.group(1))] = (int(ms.group(2)), int(ms.group(1)))
    return out


def probe_counters(lab, config):
    """kernel::counters() through build/test/counters-probe: (list of dicts or None, error)."""
    probe = os.path.join(lab.build_dir, "test", "counters-probe")
    if not os.access(probe, os.X_OK):
        return None, f"no executable {probe}"
    p = subprocess.run(["ip", "netns", "exec", "hv", probe, config], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {p.stderr.strip()}"
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()], ""


# ---------------------------------------------------------------- checks

def check_exposition(lab, daemon):
    s, err = scrape(lab)
    if not lab.check(f"GET {URL} in the hv netns answers a strictly valid text exposition", s is not None, err):
        return None
    # prometheus-cpp 1.0 says "text/plain; charset=utf-8": Prometheus reads text/plain as 0.0.4.
    lab.check(f"its content type is the text format ({s.content_type})", s.content_type.startswith("text/plain"),
              s.content_type)
    version = subprocess.run([lab.daemon_path(), "--version"], capture_output=True, text=True).stdout.split()[-1]
    lab.check(f"dpoffload_build_info{{version=\"{version}\"}} is 1",
              s.get("dpoffload_build_info", version=version) == 1, str(s.series("dpoffload_build_info")))
    want = {
        "dpoffload_rules": "gauge", "dpoffload_reconcile_passes_total": "counter",
        "dpoffload_reconcile_duration_seconds": "histogram", "dpoffload_audits_total": "counter",
        "dpoffload_audit_duration_seconds": "histogram", "dpoffload_audit_drift_total": "counter",
        "dpoffload_events_total": "counter", "dpoffload_netlink_overruns_total": "counter",
        "dpoffload_rules_refused_total": "counter", "dpoffload_malformed_input_total": "counter",
        "dpoffload_egress_packets_total": "counter", "dpoffload_egress_bytes_total": "counter",
        "dpoffload_dropped_packets_total": "counter", "dpoffload_nat_subscribers": "gauge",
        "dpoffload_egress_hw_packets_total": "counter", "dpoffload_egress_hw_bytes_total": "counter",
        "dpoffload_dropped_hw_packets_total": "counter", "dpoffload_dropped_bytes_total": "counter",
        "dpoffload_nat_chunks_held": "gauge", "dpoffload_nat_pool_utilisation_ratio": "gauge",
        "dpoffload_nat_chunk_allocations_total": "counter", "dpoffload_nat_chunk_releases_total": "counter",
        "dpoffload_nat_chunk_refusals_total": "counter", "dpoffload_nat_first_packets_punted_total": "counter",
        "dpoffload_nat_first_packet_latency_seconds": "histogram",
        "dpoffload_nat_first_packets_dropped_total": "counter", "dpoffload_counters_up": "gauge",
    }
    # The NAT gauges appear once the stage runs, the rules once a refresh has been made.
    s, ok, err = scrape_until(lab, lambda x: all(x.types.get(f) == t for f, t in want.items()))
    missing = {f: t for f, t in want.items() if s is None or s.types.get(f) != t}
    lab.check(f"every family of docs/metrics.md is there with its type ({len(want)})", ok and not missing,
              f"missing or mistyped: {missing} {err}")
    lab.check("one start pass counted, the start lane observed",
              s is not None and s.get("dpoffload_reconcile_passes_total", lane="start") == 1
              and s.get("dpoffload_reconcile_duration_seconds_count", lane="start") == 1,
              str(s.series("dpoffload_reconcile_passes_total")) if s else err)
    lab.check("the action statistics were read at the scrape (dpoffload_counters_up 1)",
              s is not None and s.get("dpoffload_counters_up") == 1)
    return s


def check_rules(lab):
    t0 = time.monotonic()
    first, _ = scrape(lab)
    took = time.monotonic() - t0
    # The devices the daemon keeps rules on (the uplink, the punt pair's end), as it says.
    devices = sorted({ls["device"] for ls, _v in first.series("dpoffload_rules")}) if first else []
    lab.check(f"dpoffload_rules has the uplink p0 among its devices ({devices})", "p0" in devices)

    def agree(s):
        for dev in devices:
            tc = tc_filters(lab, dev)
            for state in ("installed", "in_hw", "not_in_hw"):
                if s.get("dpoffload_rules", device=dev, state=state) != tc[state]:
                    return False
            if s.get("dpoffload_rules", device=dev, state="desired") != tc["installed"]:
                return False
        return True

    s, ok, err = scrape_until(lab, agree)
    detail = []
    for dev in devices:
        tc = tc_filters(lab, dev)
        got = {st: s.get("dpoffload_rules", device=dev, state=st) if s else None
               for st in ("desired", "installed", "in_hw", "not_in_hw", "refused")}
        detail.append(f"{dev}: metrics {got}, tc {tc}")
    lab.check("dpoffload_rules by device and state = tc filter show (desired = installed = filters, "
              "in_hw / not_in_hw as tc flags them)", ok, "; ".join(detail) + (f" {err}" if err else ""))
    lab.note("rules: " + "; ".join(detail))
    lab.note(f"one scrape took {took * 1000:.1f} ms (emulated guest, {sum(tc_filters(lab, d)['installed'] for d in devices)} rules)")


def check_routed(lab, config):
    """N frames blue -> red, routed by tc: red's egress counter grows by N."""
    before, _ = scrape(lab)
    tc0 = tc_actions(lab, "mirred").get(VLAN_BASE + 101, (0, 0))
    cap = lab.capture("fabric", "fab0")
    seen = 0
    try:
        for i in range(ROUTED):
            lab.send("fabric", "fab0", nv.inner_udp(nv.SUB_A, 39100, nv.SUB_R, 5001, f"dpo-metrics {i}".encode()))
        for i in range(ROUTED):
            want = f"dpo-metrics {i}".encode()
            if cap.expect(lambda p, w=want: Raw in p and p[Raw].load == w and p[IP].ttl == 63,
                          nv.ARRIVE_TIMEOUT) is not None:
                seen += 1
    finally:
        cap.close()
    lab.check(f"{ROUTED} frames blue -> red routed by tc (seen on fab0 with ttl 63)", seen == ROUTED,
              f"{seen} of {ROUTED}")
    tc1 = tc_actions(lab, "mirred").get(VLAN_BASE + 101, (0, 0))
    after, err = scrape(lab)
    if before is None or after is None:
        return lab.check("egress counter of red scraped before and after", False, err)
    labels = {"interface": "red", "device": "p0", "via": "vlan 101"}
    p0, p1 = before.get("dpoffload_egress_packets_total", **labels), after.get("dpoffload_egress_packets_total", **labels)
    b0, b1 = before.get("dpoffload_egress_bytes_total", **labels) or 0, after.get("dpoffload_egress_bytes_total", **labels)
    lab.check(f"dpoffload_egress_packets_total{{interface=\"red\",device=\"p0\",via=\"vlan 101\"}} grew by "
              f"{ROUTED} ({p0} -> {p1})", p1 is not None and p1 - (p0 or 0) == ROUTED,
              str(after.series("dpoffload_egress_packets_total")))
    lab.check(f"and its bytes by what tc counts on mirred index {VLAN_BASE + 101:#x} (+{(b1 or 0) - b0})",
              b1 is not None and b1 - b0 == tc1[1] - tc0[1] and tc1[0] - tc0[0] == ROUTED,
              f"tc {tc0} -> {tc1}, metrics bytes {b0} -> {b1}")


def check_first_packet(lab):
    before, err = scrape(lab)
    if before is None:
        return lab.check("scrape before the first packet", False, err)
    punts0 = before.get("dpoffload_nat_first_packets_punted_total") or 0
    alloc0 = before.get("dpoffload_nat_chunk_allocations_total") or 0
    lat0 = before.get("dpoffload_nat_first_packet_latency_seconds_count") or 0
    payload = b"dpo-metrics first packet"
    got, _t, others = nv.send_get(lab, nv.inner_udp(nv.SUB_A, 39200, nv.REMOTE, 53, payload), nv.has_payload(payload),
                                  timeout=nv.FIRST_TIMEOUT)
    lab.check("a NAT first packet from 10.100.0.2 comes out translated", got is not None and got[IP].src in nv.POOL,
              others if got is None else nv.describe(got))
    public = got[IP].src if got is not None else None

    def counted(s):
        return (s.get("dpoffload_nat_first_packets_punted_total") == punts0 + 1
                and s.get("dpoffload_nat_chunk_allocations_total") == alloc0 + 1
                and s.get("dpoffload_nat_first_packet_latency_seconds_count") == lat0 + 1
                and s.get("dpoffload_nat_subscribers") == 1)

    s, ok, err = scrape_until(lab, counted)
    lab.check("it is counted: punted +1, chunk allocations +1, one latency observation (read -> reinjected), "
              "1 subscriber", ok,
              err or (f"punted {s.get('dpoffload_nat_first_packets_punted_total')} (was {punts0}), allocations "
                      f"{s.get('dpoffload_nat_chunk_allocations_total')} (was {alloc0}), latency count "
                      f"{s.get('dpoffload_nat_first_packet_latency_seconds_count')} (was {lat0}), subscribers "
                      f"{s.get('dpoffload_nat_subscribers')}" if s else ""))
    if s is not None and ok:
        lat = s.get("dpoffload_nat_first_packet_latency_seconds_sum") - (
            before.get("dpoffload_nat_first_packet_latency_seconds_sum") or 0)
        lab.note(f"first packet latency (read -> reinjected) observed: {lat * 1000:.2f} ms")
        lab.check(f"the latency observed is positive and under {nv.FIRST_TIMEOUT:.0f} s ({lat * 1000:.2f} ms)",
                  0 < lat < nv.FIRST_TIMEOUT)
        per_address = (nv.PORTS[1] - nv.PORTS[0] + 1) // nv.CHUNK_SIZE
        ratio = s.get("dpoffload_nat_pool_utilisation_ratio", address=public or "")
        held = s.get("dpoffload_nat_pool_chunks_held", address=public or "")
        others_held = sum(v for ls, v in s.series("dpoffload_nat_pool_chunks_held") if ls.get("address") != public)
        lab.check(f"pool utilisation of {public}: 1 chunk held of {per_address} (ratio {ratio}), none elsewhere",
                  held == 1 and ratio == 1 / per_address and others_held == 0,
                  str(s.series("dpoffload_nat_pool_chunks_held")))
        lab.check("first-packet events counted", (s.get("dpoffload_events_total", kind="first-packet") or 0) >= 1)


def check_drops(lab):
    before, err = scrape(lab)
    if before is None:
        return lab.check("scrape before the unsolicited packets", False, err)
    d0 = before.get("dpoffload_dropped_packets_total", reason="outer-new") or 0
    frames = [nv.outer_udp(nv.STRANGER, 4444 + i, nv.POOL[3], 2000, b"dpo-metrics unsolicited")
              for i in range(UNSOLICITED)]
    leaked = nv.send_none(lab, frames, nv.has_payload(b"dpo-metrics unsolicited"))
    lab.check(f"{UNSOLICITED} unsolicited outer packets are not forwarded", leaked is None, nv.describe(leaked)
              if leaked is not None else "")
    after, err = scrape(lab)
    d1 = after.get("dpoffload_dropped_packets_total", reason="outer-new") if after else None
    lab.check(f"dpoffload_dropped_packets_total{{reason=\"outer-new\"}} grew by {UNSOLICITED} ({d0} -> {d1})",
              d1 is not None and d1 - d0 == UNSOLICITED,
              str(after.series("dpoffload_dropped_packets_total")) if after else err)


def check_reader(lab, config):
    """kernel::counters() = tc -s actions, and = the scrape (no traffic meanwhile)."""
    got, err = probe_counters(lab, config)
    if not lab.check("counters-probe (kernel::counters) ran", got is not None, err):
        return
    tc = {"drop": tc_actions(lab, "gact"), "egress": tc_actions(lab, "mirred")}
    ours = {k: {i: v for i, v in acts.items() if OURS[0] <= i < OURS[1]} for k, acts in tc.items()}
    by = {(c["kind"], c["index"]): c for c in got}
    wrong = []
    for kind, acts in ours.items():
        for index, (pkts, nbytes) in acts.items():
            c = by.get((kind, index))
            if c is None:
                wrong.append(f"{kind} {index:#x}: in tc, not in counters()")
            elif (c["packets"], c["bytes"]) != (pkts, nbytes):
                wrong.append(f"{kind} {c['name']}: counters() {c['packets']} pkt {c['bytes']} B, tc {pkts} pkt {nbytes} B")
    for (kind, index), c in by.items():
        if index not in ours.get(kind, {}):
            wrong.append(f"{kind} {c['name']} {index:#x}: in counters(), not in tc")
    n_tc = sum(len(v) for v in ours.values())
    lab.check(f"kernel::counters() = tc -s actions show action gact|mirred for each of our {len(got)} shared "
              f"actions (packets and bytes; tc has {n_tc})", got and len(got) == n_tc and not wrong, "; ".join(wrong))
    names = sorted(f"{c['kind']}:{c['name']}" for c in got)
    lab.note("counters(): " + ", ".join(f"{c['kind']}:{c['name']}={c['packets']}" for c in got))
    lab.check("they are named: egress by interface (red, transit, nat-punt), drops by reason (outer-new)",
              {"egress:red", "egress:transit", "egress:nat-punt", "drop:outer-new"} <= set(names), str(names))
    s, err = scrape(lab)
    if s is None:
        return lab.check("scrape after counters()", False, err)
    differ = []
    for c in got:
        if c["kind"] == "drop":
            v = s.get("dpoffload_dropped_packets_total", reason=c["name"])
        else:
            v = s.get("dpoffload_egress_packets_total", interface=c["name"], device=c["device"], via=c["detail"])
        if v != c["packets"]:
            differ.append(f"{c['kind']} {c['name']}: scrape {v}, counters() {c['packets']}")
    lab.check(f"the scrape's egress and drop counters = counters() ({len(got)})", got and not differ,
              "; ".join(differ))
    lab.check("no malformed input counted (the action dumps among it)",
              all(v == 0 for _ls, v in s.series("dpoffload_malformed_input_total")),
              str(s.series("dpoffload_malformed_input_total")))


def check_events(lab):
    before, _ = scrape(lab)
    r0 = (before.get("dpoffload_events_total", kind="route") or 0) if before else 0
    lab.sh("ip route add 192.0.2.0/24 via 10.200.0.254 dev p0.200", ns="hv")
    s, ok, err = scrape_until(lab, lambda x: (x.get("dpoffload_events_total", kind="route") or 0) > r0
                              and (x.get("dpoffload_reconcile_passes_total", lane="bulk") or 0) >= 1)
    lab.check("a route added: dpoffload_events_total{kind=\"route\"} grows, a bulk pass is counted", ok,
              err or (str(s.series("dpoffload_events_total")) if s else ""))
    check_rules(lab)  # and the rule counts follow it (refreshed within a second)


def check_usage(lab, config):
    for bad in ("localhost:9641", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "::1:9641", "[::1]"):
        p = subprocess.run([lab.daemon_path(), "--config", config, "--metrics", bad], capture_output=True,
                           text=True, timeout=30)
        lab.check(f"--metrics {bad}: usage error, exit 2, the option named", p.returncode == 2
                  and "--metrics" in p.stderr, f"exit {p.returncode}: {p.stderr.strip()}")


def check_listen(lab):
    """--metrics [::1]:PORT serves over IPv6, or, with a civetweb built without IPv6 (Debian
    12's), refuses the start saying so; a port in use fails the start (exit 1, said why).
    In a namespace of its own, with a mapping whose uplink does not exist: those daemons
    hold no rule and touch nothing of hv's."""
    lab.add_netns("m6")
    lab.sh("ip link set lo up", ns="m6")
    fd, lonely = tempfile.mkstemp(prefix="metrics-v6-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write('{"uplink": "p9", "interfaces": [{"name": "x", "netdev": "p9.5", "role": "inner", "vlan": 5}]}')
    address = f"[::1]:{PORT}"
    d = DaemonProcess(lab, "m6", lonely, "v6", ("--metrics", address))
    try:
        started, line = d.next_event("started", 20.0)
        if started is None and "built without IPv6" in line:
            # Debian 12's civetweb has no IPv6 (agent/metrics.cpp): the start must say so.
            lab.check(f"--metrics {address}: civetweb without IPv6 refuses the start with the reason (exit 1)",
                      d.proc.wait(timeout=10) == 1 and "startup-failed" in line, line)
            lab.note("civetweb here has no IPv6: --metrics [::1]:PORT cannot serve (docs/metrics.md)")
            d.kill()
            d = DaemonProcess(lab, "m6", lonely, "v4", ("--metrics", f"127.0.0.1:{PORT}"))
            address = f"127.0.0.1:{PORT}"
            started, line = d.next_event("started", 20.0)
        body, err = "", ""
        deadline = time.monotonic() + SCRAPE_TIMEOUT
        while started is not None and time.monotonic() < deadline:
            try:
                with lab.netns("m6"):
                    with urllib.request.urlopen(f"http://{address}/metrics", timeout=SCRAPE_TIMEOUT) as r:
                        body = r.read().decode()
                break
            except OSError as e:
                err = str(e)
                time.sleep(0.2)  # the poll's pace
        ok = False
        try:
            _types, samples = parse_exposition(body)
            ok = any(n == "dpoffload_build_info" for n, _ls in samples)
        except ExpositionError as e:
            err = str(e)
        lab.check(f"--metrics {address} in a namespace of its own serves the exposition", started is not None and ok,
                  err or line or d.tail())
        p = subprocess.run(["ip", "netns", "exec", "m6", lab.daemon_path(), "--config", lonely, "--metrics", address],
                           capture_output=True, text=True, timeout=60)
        lab.check("a second daemon on the port in use: exit 1, startup-failed naming the address",
                  p.returncode == 1 and "startup-failed" in p.stderr and address in p.stderr,
                  f"exit {p.returncode}: {p.stderr.strip()[-300:]}")
    finally:
        d.kill()
        os.unlink(lonely)


def run(lab):
    if not lab.check("dpoffloadd built (--build-dir)", lab.daemon_path() is not None,
                     f"no executable agent/dpoffloadd under {lab.build_dir}"):
        return
    nv.setup(lab)
    fd, config = tempfile.mkstemp(prefix="metrics-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(nv.MAPPING)
    lab.sh("ip link set lo up", ns="hv")
    daemon = None
    try:
        daemon, rec = nv.start_daemon(lab, config, "metrics", timeout=nv.START_TIMEOUT,
                                      args=("--metrics", f"127.0.0.1:{PORT}"))
        if rec is None:
            return
        if check_exposition(lab, daemon) is None:
            return
        check_rules(lab)
        check_routed(lab, config)
        check_first_packet(lab)
        check_drops(lab)
        check_reader(lab, config)
        check_events(lab)
        check_usage(lab, config)
        check_listen(lab)
        lab.check("the daemon still runs", daemon.proc.poll() is None, daemon.tail())
    finally:
        if daemon is not None:
            if lab.failed:
                for line in daemon.lines()[-20:]:
                    lab.note(f"| {line.rstrip()}")
            daemon.kill()
        os.unlink(config)
