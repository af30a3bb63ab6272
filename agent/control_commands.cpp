// SPDX-License-Identifier: GPL-2.0-or-later
#include "control_commands.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>

#include "chunk_record_file.hpp"
#include "core/compile/compiler.hpp"
#include "core/text.hpp"
#include "nat_runtime.hpp"

namespace dpo::agent {

using nlohmann::json;

namespace {

constexpr std::size_t kDefaultLimit = 1000;

std::string iso_ms(std::int64_t ms) {
    return iso8601(std::chrono::system_clock::time_point(std::chrono::milliseconds(ms)));
}

// A key in an operator's words: names where the engine keeps indices.
struct KeyName {
    const Mapping& m;
    const model::KernelModel& k;
    std::string operator()(const compile::ClassifyKey& c) const {
        if (c.interface < m.interfaces.size()) return "classify interface " + m.interfaces[c.interface].name;
        return compile::describe(compile::Key{c});
    }
    std::string operator()(const compile::HostKey& h) const {
        return "host " + h.address.str() + " on " + k.link_name(h.ifindex);
    }
    std::string operator()(const compile::AdjacencyKey& a) const {
        return "next hop " + a.nexthop.str() + " on " + k.link_name(a.egress) +
               (a.family == Family::V4 ? " (ipv4)" : " (ipv6)");
    }
    template <class K>
    std::string operator()(const K& other) const {
        return compile::describe(compile::Key{other});
    }
};

std::string key_name(const ControlContext& c, const compile::Key& k) {
    return std::visit(KeyName{c.engine.mapping(), c.engine.model()}, k);
}

std::string state_of(const engine::RuleView& v) {
    if (v.refusal) return "refused";
    if (!v.wanted) return "going";  // installed, nobody wants it: its delete is on its way
    if (!v.installed) return "pending";
    return v.in_step ? "installed" : "changing";
}

std::string identity_text(const tc::Identity& id) { return tc::placed_at(id).key(); }

json rule_json(const ControlContext& c, const tc::Identity& id, const engine::RuleView& v) {
    json r = {{"dev", id.dev},     {"chain", id.chain},      {"prio", id.prio},
              {"rule", identity_text(id)}, {"state", state_of(v)}, {"in_hw", v.in_hw},
              {"not_in_hw", v.not_in_hw}};
    if (v.handle) r["handle"] = v.handle;
    if (v.owner) r["key"] = key_name(c, *v.owner);
    if (v.refusal) {
        r["error"] = std::strerror(v.refusal->error);
        r["extack"] = v.refusal->extack;
    }
    return r;
}

template <class T>
std::optional<T> arg(const json& args, const char* name) {
    if (!args.contains(name) || args[name].is_null()) return std::nullopt;
    try {
        return args[name].get<T>();
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

std::size_t limit_of(const json& args) {
    const auto l = arg<std::int64_t>(args, "limit");
    if (!l || *l < 0) return kDefaultLimit;
    return *l == 0 ? std::numeric_limits<std::size_t>::max() : static_cast<std::size_t>(*l);
}

json rules_by_state(const engine::DeviceCounts& d) {
    return {{"desired", d.desired},     {"installed", d.installed}, {"in_hw", d.in_hw},
            {"not_in_hw", d.not_in_hw}, {"refused", d.refused}};
}

// What one key makes and why, as `explain` shows it.
json key_json(const ControlContext& c, const engine::KeyReport& r) {
    json j = {{"key", key_name(c, r.key)}, {"known", r.known}, {"queued", r.queued}};
    json rules = json::array();
    bool all_in = true, forwards = false;
    for (const auto& [rule, v] : r.rules) {
        json x = v.identity ? rule_json(c, *v.identity, v)
                            : json{{"dev", rule.dev}, {"chain", rule.chain}, {"prio", rule.prio},
                                   {"rule", rule.key()}, {"state", "pending"}};
        x["why"] = rule.why;
        x["command"] = tc::to_tc_command(rule);
        // A rule whose actions end in `pass` hands the packet to the kernel: it is there
        // so that the kernel, not the fast path, takes what it matches.
        const bool to_kernel = !rule.actions.empty() && std::holds_alternative<tc::Pass>(rule.actions.back());
        x["to_kernel"] = to_kernel;
        forwards = forwards || !to_kernel;
        all_in = all_in && x["state"] == "installed";
        rules.push_back(std::move(x));
    }
    j["rules"] = std::move(rules);
    j["notes"] = r.notes;
    // In the fast path: some rule of the key forwards (not only hands to the kernel), and
    // all of its rules are installed as wanted.
    j["in_fast_path"] = forwards && all_in;
    j["left_to_kernel"] = !forwards;
    return j;
}

}  // namespace

std::string iso8601(std::chrono::system_clock::time_point t) {
    return utc_iso8601(std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
}

std::optional<std::int64_t> parse_iso8601_ms(const std::string& text) {
    int y, mo, d, h, mi;
    double sec;
    int consumed = 0;
    if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%lf%n", &y, &mo, &d, &h, &mi, &sec, &consumed) != 6)
        return std::nullopt;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec < 0 || sec >= 61) return std::nullopt;
    std::string zone = text.substr(static_cast<std::size_t>(consumed));
    std::int64_t offset_min = 0;
    if (zone == "Z" || zone == "z") {
    } else {
        int oh, om;
        char sign;
        int n = 0;
        if (std::sscanf(zone.c_str(), "%c%2d:%2d%n", &sign, &oh, &om, &n) != 3 || static_cast<std::size_t>(n) != zone.size() ||
            (sign != '+' && sign != '-') || oh > 23 || om > 59)
            return std::nullopt;
        offset_min = (sign == '+' ? 1 : -1) * (oh * 60 + om);
    }
    std::tm tm{};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = 0;
    const std::time_t base = timegm(&tm);
    if (base == static_cast<std::time_t>(-1)) return std::nullopt;
    return (static_cast<std::int64_t>(base) - offset_min * 60) * 1000 + static_cast<std::int64_t>(sec * 1000.0);
}

Result<json> control_status(const ControlContext& c) {
    const auto& s = c.status;
    const auto& e = c.engine;
    const auto now = std::chrono::steady_clock::now();
    json j;
    j["version"] = s.version;
    j["pid"] = getpid();
    j["started"] = iso8601(s.started);
    j["uptime_seconds"] = std::chrono::duration_cast<std::chrono::seconds>(now - s.started_mono).count();
    j["ready"] = s.ready;
    j["mapping"] = {{"file", s.mapping_file},
                    {"loaded", iso8601(s.mapping_loaded)},
                    {"interfaces", e.mapping().interfaces.size()},
                    {"uplink", e.mapping().uplink},
                    {"reloads", s.reloads},
                    {"reloads_refused", s.reloads_refused}};
    const auto counts = e.counts();
    json devices = json::object();
    for (const auto& [dev, d] : e.device_counts()) devices[dev] = rules_by_state(d);
    j["rules"] = {{"total", rules_by_state({counts.rules, counts.installed, counts.in_hw, counts.not_in_hw, counts.refused})},
                  {"by_device", devices},
                  {"keys", counts.keys},
                  {"queued_keys", counts.queued},
                  {"adjacencies", counts.adjacencies}};
    j["kernel"] = {{"routes", e.model().table(e.mapping().route_table).size()},
                   {"route_table", e.mapping().route_table},
                   {"neighbours", e.model().neighbour_count()},
                   {"links", e.model().links().size()},
                   {"overruns", s.overruns}};
    if (s.last_reconcile) {
        const auto& p = *s.last_reconcile;
        j["last_reconcile"] = {{"at", iso8601(p.at)},     {"ms", p.ms},           {"lane", p.lane},
                               {"keys", p.keys},          {"messages", p.messages}, {"added", p.added},
                               {"replaced", p.replaced},  {"deleted", p.deleted}, {"refused", p.refused}};
    }
    j["reconciles"] = s.reconciles;
    if (s.last_audit) {
        const auto& a = *s.last_audit;
        j["last_audit"] = {{"at", iso8601(a.at)}, {"ms", a.ms}, {"reason", a.reason}, {"drift", a.drift}, {"dumps", a.dumps}};
    }
    j["audits"] = s.audits;
    json nat = {{"state", s.nat_state}};
    if (c.nat) {
        const auto& t = c.nat->manager().table();
        nat["subscribers"] = t.subscribers();
        nat["chunks_held"] = t.chunks_held();
        nat["chunks_free"] = t.chunks_free();
        nat["chunk_size"] = c.nat->config().chunk_size;
        nat["waiting_first_packets"] = c.nat->waiting_count();
        const auto& m = c.nat->manager().counters();
        nat["refused"] = {{"chunk_limit", m.chunk_limit}, {"pool_empty", m.pool_empty}};
    }
    if (c.record) nat["record"] = {{"file", c.record->path()}, {"bytes", c.record->bytes()},
                                   {"appended", c.record->appended()}, {"write_errors", c.record->write_errors()}};
    j["nat"] = std::move(nat);
    const auto notes = e.notes();
    j["notes"] = notes.size();
    return j;
}

Result<json> control_rules(const ControlContext& c, const json& args) {
    const auto dev = arg<std::string>(args, "dev");
    const auto chain = arg<std::uint32_t>(args, "chain");
    const bool not_in_hw = arg<bool>(args, "not_in_hw").value_or(false);
    const bool refused = arg<bool>(args, "refused").value_or(false);
    const std::size_t limit = limit_of(args);

    std::vector<engine::RuleView> picked;
    c.engine.for_each_rule([&](const engine::RuleView& v) {
        const tc::Identity& id = *v.identity;
        if (dev && id.dev != *dev) return;
        if (chain && id.chain != *chain) return;
        if (not_in_hw && !(v.installed && !v.in_hw)) return;
        if (refused && !v.refusal) return;
        picked.push_back(v);
    });
    const std::size_t matched = picked.size();
    std::sort(picked.begin(), picked.end(),
              [](const engine::RuleView& a, const engine::RuleView& b) { return *a.identity < *b.identity; });
    if (picked.size() > limit) picked.resize(limit);

    // Packet counters: one terse dump of each device listed (the kernel's counters are
    // nowhere else), matched to the rules by handle.
    std::map<std::string, std::map<std::uint32_t, std::pair<std::uint64_t, std::uint64_t>>> stats;
    std::vector<std::string> problems;
    for (const auto& v : picked) {
        if (!v.installed || stats.count(v.identity->dev)) continue;
        auto& s = stats[v.identity->dev];
        auto r = c.tc.dump(v.identity->dev, true, [&](tc::Installed&& i) { s[i.handle] = {i.packets, i.bytes}; });
        if (!r) problems.push_back(v.identity->dev + ": " + r.error());
    }
    // Why each rule is there: its key compiled again, once per key.
    std::map<compile::Key, engine::KeyReport> reports;
    json rules = json::array();
    for (const auto& v : picked) {
        json r = rule_json(c, *v.identity, v);
        if (v.installed) {
            const auto& s = stats[v.identity->dev];
            if (const auto it = s.find(v.handle); it != s.end()) {
                r["packets"] = it->second.first;
                r["bytes"] = it->second.second;
            }
        }
        if (v.owner) {
            auto it = reports.find(*v.owner);
            if (it == reports.end()) it = reports.emplace(*v.owner, c.engine.report(*v.owner)).first;
            for (const auto& [rule, _] : it->second.rules)
                if (rule.identity() == *v.identity) r["why"] = rule.why;
        }
        rules.push_back(std::move(r));
    }
    json j = {{"matched", matched}, {"shown", rules.size()}, {"rules", std::move(rules)}};
    if (!problems.empty()) j["problems"] = problems;
    return j;
}

Result<json> control_explain(const ControlContext& c, const json& args) {
    const auto what = arg<std::string>(args, "what");
    if (!what || what->empty()) return fail(std::string("explain what? a prefix, an address, a subscriber or an interface"));
    const auto& e = c.engine;
    const Mapping& m = e.mapping();
    const auto& table = e.model().table(m.route_table);
    std::vector<compile::Key> keys;
    std::vector<std::string> says;  // what the answer says beside the keys
    json j = {{"query", *what}};

    auto route_of = [&](const IpAddress& a) {
        if (const Route* r = table.lookup(a)) {
            keys.push_back(compile::PrefixKey{r->destination});
            says.push_back(a.str() + " is routed by " + r->destination.str() + " (table " +
                           std::to_string(m.route_table) + ")");
        } else {
            says.push_back("no route for " + a.str() + " in table " + std::to_string(m.route_table) +
                           ": nothing in the fast path; the kernel decides");
        }
    };

    if (what->find('/') != std::string::npos) {
        const auto p = IpPrefix::parse(*what);
        if (!p) return fail("not a prefix: " + printable(*what));
        j["kind"] = "prefix";
        if (table.best(*p)) keys.push_back(compile::PrefixKey{*p});
        else {
            says.push_back("no route for exactly " + p->str() + " in table " + std::to_string(m.route_table));
            route_of(p->address);
        }
    } else if (const auto a = IpAddress::parse(*what)) {
        j["kind"] = "address";
        if (e.model().is_local(*a)) keys.push_back(compile::LocalAddressKey{*a});
        e.model().for_each_neighbour([&](const Neighbour& n) {
            if (n.address == *a) keys.push_back(compile::HostKey{n.ifindex, *a});
        });
        if (c.nat) {
            const auto& t = c.nat->manager().table();
            const auto chunks = t.chunks_of(*a);
            if (!chunks.empty() || c.nat->manager().subscriber(*a)) {
                keys.push_back(compile::SubscriberKey{*a});
                json held = json::array();
                for (const auto id : chunks) {
                    const auto p = t.ports(id);
                    held.push_back({{"public", p.address.str()}, {"ports", std::to_string(p.first) + "-" + std::to_string(p.last)},
                                    {"connections", t.connections(id)}});
                }
                j["nat"] = {{"chunks", held}};
                says.push_back("NAT subscriber with " + std::to_string(chunks.size()) + " chunk(s)");
            } else if (m.nat) {
                says.push_back("not a NAT subscriber now: its first packet gets it a chunk");
            }
        }
        route_of(*a);
    } else {
        j["kind"] = "interface";
        for (std::uint32_t i = 0; i < m.interfaces.size(); ++i)
            if (m.interfaces[i].name == *what || m.interfaces[i].netdev == *what) keys.push_back(compile::ClassifyKey{i});
        if (keys.empty()) {
            if (*what == m.uplink || (m.vxlan && *what == m.vxlan->device))
                keys.push_back(compile::PipelineKey{*what == m.uplink ? compile::IngressDev::Uplink : compile::IngressDev::Vxlan});
            else
                return fail("no interface, device, address or prefix " + printable(*what) + " in the mapping");
        }
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    json out = json::array();
    for (const auto& k : keys) out.push_back(key_json(c, e.report(k)));
    j["keys"] = std::move(out);
    j["says"] = says;
    return j;
}

Result<json> control_nat(const ControlContext& c, const json& args) {
    const auto what = arg<std::string>(args, "what").value_or("");
    if (what == "who") {
        const auto addr = arg<std::string>(args, "address");
        const auto port = arg<std::uint32_t>(args, "port");
        const auto a = addr ? IpAddress::parse(*addr) : std::nullopt;
        if (!a || a->family != Family::V4 || !port || *port > 65535)
            return fail(std::string("nat who needs PUBLIC_ADDR:PORT (IPv4)"));
        std::int64_t at_ms;
        const bool now = !args.contains("at") || args["at"].is_null();
        if (now) {
            at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                        .count();
        } else {
            const auto t = arg<std::string>(args, "at");
            const auto ms = t ? parse_iso8601_ms(*t) : std::nullopt;
            if (!ms) return fail("not an ISO 8601 time (like 2026-11-23T14:02:00Z): " + printable(t.value_or("")));
            at_ms = *ms;
        }
        json j = {{"public", a->str()}, {"port", *port}, {"at", iso_ms(at_ms)}};
        if (!c.record) return fail(std::string("no chunk-event record on this host (see the daemon's log: nat-record-*)"));
        auto w = c.record->who(a->v4_host_order(), static_cast<std::uint16_t>(*port), at_ms);
        if (!w) return fail(w.error());
        j["records"] = w->records;
        if (w->begins_ms) j["record_begins"] = iso_ms(*w->begins_ms);
        if (!w->last) {
            j["answer"] = "unknown";
            j["says"] = w->begins_ms && at_ms < *w->begins_ms
                            ? "the record begins after that time"
                            : "no chunk of that port was handed out in the record's time";
            // A chunk adopted at a start (held since before the record) is known now.
            if (c.nat && now)
                if (const auto id = c.nat->manager().table().chunk_at(*a, static_cast<std::uint16_t>(*port)))
                    if (const auto h = c.nat->manager().table().holder(*id)) {
                        j["answer"] = "held";
                        j["subscriber"] = h->str();
                        j["says"] = "held now; allocated before the record began";
                    }
            return j;
        }
        const auto& ev = *w->last;
        const IpAddress sub = IpAddress::v4(ev.subscriber);
        j["ports"] = std::to_string(ev.first) + "-" + std::to_string(ev.last);
        if (ev.kind == nat::ChunkEvent::Kind::Allocated) {
            j["answer"] = "held";
            j["subscriber"] = sub.str();
            j["since"] = iso_ms(ev.unix_ms);
        } else {
            j["answer"] = "free";
            j["last_subscriber"] = sub.str();
            j["released"] = iso_ms(ev.unix_ms);
        }
        return j;
    }
    if (!c.nat) return fail("the NAT stage is not running: " + c.status.nat_state);
    const auto& mgr = c.nat->manager();
    const auto& t = mgr.table();
    const std::size_t limit = limit_of(args);
    const std::uint32_t max = c.nat->config().max_chunks_per_subscriber;
    if (what == "subscribers" || what == "chunks") {
        std::vector<IpAddress> subs;
        t.for_each_subscriber([&](const IpAddress& a) { subs.push_back(a); });
        std::sort(subs.begin(), subs.end());
        json list = json::array();
        std::size_t at_limit = 0, chunks = 0;
        for (const auto& s : subs) {
            const auto ids = t.chunks_of(s);
            at_limit += ids.size() >= max;
            for (const auto id : ids) {
                if (what != "chunks" || list.size() >= limit) break;
                const auto p = t.ports(id);
                list.push_back({{"public", p.address.str()}, {"first", p.first}, {"last", p.last},
                                {"subscriber", s.str()}, {"connections", t.connections(id)}});
            }
            chunks += ids.size();
            if (what != "subscribers" || list.size() >= limit) continue;
            std::uint64_t conns = 0;
            json ports = json::array();
            for (const auto id : ids) {
                conns += t.connections(id);
                const auto p = t.ports(id);
                ports.push_back(std::to_string(p.first) + "-" + std::to_string(p.last));
            }
            const auto st = mgr.subscriber(s);
            list.push_back({{"subscriber", s.str()},
                            {"public", ids.empty() ? "" : t.ports(ids.front()).address.str()},
                            {"chunks", ids.size()},
                            {"ports", ports},
                            {"connections", conns},
                            {"at_limit", ids.size() >= max},
                            {"refused", st && !st->commit ? nat::to_string(st->refusal) : ""}});
        }
        // The list under the name asked for; the totals under names of their own.
        return json{{what, list},
                    {"subscriber_count", subs.size()},
                    {"chunks_held", chunks},
                    {"at_limit", at_limit},
                    {"max_chunks_per_subscriber", max},
                    {"shown", list.size()}};
    }
    if (what == "pool") {
        const auto use = t.pool_use();
        json list = json::array();
        std::uint64_t total = 0, held = 0, free = 0, rest = 0;
        for (const auto& u : use) {
            total += u.chunks, held += u.held, free += u.free, rest += u.quarantined;
            if (list.size() < limit)
                list.push_back({{"address", u.address.str()}, {"chunks", u.chunks}, {"held", u.held}, {"free", u.free},
                                {"quarantined", u.quarantined},
                                {"utilisation", u.chunks ? static_cast<double>(u.held) / u.chunks : 0.0}});
        }
        return json{{"pool", list},     {"addresses", use.size()},  {"chunks", total},
                    {"held", held},     {"free", free},             {"quarantined", rest},
                    {"chunk_size", c.nat->config().chunk_size},   {"utilisation", total ? static_cast<double>(held) / total : 0.0},
                    {"refused", {{"chunk_limit", mgr.counters().chunk_limit}, {"pool_empty", mgr.counters().pool_empty}}}};
    }
    return fail("nat what? subscribers, chunks, pool or who (not " + printable(what) + ")");
}

}  // namespace dpo::agent
