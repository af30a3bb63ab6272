// SPDX-License-Identifier: GPL-2.0-or-later
#include "mapping_loader.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "gcc_workarounds.hpp"
#include "text.hpp"

namespace dpo {

using json = nlohmann::json;

std::string Problem::str() const {
    return printable(file) + ": " + (path.empty() ? std::string("(document)") : printable(path)) + ": " +
           printable(reason);
}

namespace {

std::string pointer_token(std::string_view key) {
    std::string out;
    for (char c : key) {
        if (c == '~') out += "~0";
        else if (c == '/') out += "~1";
        else out += c;
    }
    return out;
}

std::string child(const std::string& at, std::string_view key) { return at + "/" + pointer_token(key); }
std::string child(const std::string& at, std::size_t index) { return at + "/" + std::to_string(index); }

// GCC 12 false positive at -O3 (GCC PR 105329): "literal" + std::string&& is flagged by
// -Wrestrict inside libstdc++'s basic_string::_M_replace.
DPO_GCC_WARNING_OFF("-Wrestrict")
std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }
DPO_GCC_WARNING_ON

// nlohmann keeps the last of duplicate keys silently; an operator who wrote a key
// twice meant something, so a SAX pass finds them (and syntax errors, with line and
// column) before the DOM is built. It also bounds the nesting (kMaxMappingDepth), and
// its cost is linear in the file: a value's JSON Pointer is put together only when a
// problem names it, and no more than kMaxMappingProblems problems are kept.
class DuplicateKeyFinder : public json::json_sax_t {
public:
    DuplicateKeyFinder(std::string_view text, const std::string& file, Problems& out)
        : text_(text), file_(file), out_(out) {}

    bool null() override { return value(); }
    bool boolean(bool) override { return value(); }
    bool number_integer(json::number_integer_t) override { return value(); }
    bool number_unsigned(json::number_unsigned_t) override { return value(); }
    bool number_float(json::number_float_t, const std::string&) override { return value(); }
    bool string(std::string&) override { return value(); }
    bool binary(json::binary_t&) override { return value(); }

    bool start_object(std::size_t) override { return start(true); }
    bool key(std::string& k) override {
        auto& f = stack_.back();
        if (!f.keys.insert(k).second)
            report(child(path(), k), "key " + in_quotes(k) + " appears more than once in this object");
        f.key = k;
        return true;
    }
    bool end_object() override { return end_container(); }
    bool start_array(std::size_t) override { return start(false); }
    bool end_array() override { return end_container(); }

    bool parse_error(std::size_t position, const std::string&, const json::exception& ex) override {
        // The exception text already says what was expected; add where, as a person counts.
        std::size_t line = 1, column = 1;
        const std::size_t end = std::min(position, text_.size());
        for (std::size_t i = 0; i + 1 < end; ++i) {
            if (text_[i] == '\n') { ++line; column = 1; }
            else ++column;
        }
        std::string what = ex.what();
        // "[json.exception.parse_error.101] parse error at line 3, column 5: syntax error ..."
        if (const auto p = what.find("syntax error"); p != std::string::npos) what = what.substr(p);
        report("", "not valid JSON: line " + std::to_string(line) + ", column " + std::to_string(column) + ": " + what);
        syntax_error_ = true;
        return false;
    }

    bool syntax_error() const { return syntax_error_; }
    bool too_deep() const { return too_deep_; }
    std::size_t dropped() const { return dropped_; }

private:
    struct Frame {
        bool is_object;
        std::set<std::string> keys;
        std::string key;        // the key of the value being read, in an object
        std::size_t index = 0;  // the index of the value being read, in an array
    };

    bool start(bool is_object) {
        if (stack_.size() >= kMaxMappingDepth) {
            report(path(), "nested deeper than " + std::to_string(kMaxMappingDepth) +
                               " levels (the mapping needs a few): not a mapping file");
            too_deep_ = true;
            return false;  // stops the parse here
        }
        stack_.push_back(Frame{is_object, {}, {}, 0});
        return true;
    }
    // The JSON Pointer of the container being read (of the value being read, with child()).
    std::string path() const {
        std::string at;
        for (std::size_t i = 0; i + 1 < stack_.size(); ++i) {
            const Frame& f = stack_[i];
            at = f.is_object ? child(at, f.key) : child(at, f.index);
        }
        return at;
    }
    void report(std::string at, std::string reason) {
        if (out_.size() < kMaxMappingProblems) out_.push_back({file_, std::move(at), std::move(reason)});
        else ++dropped_;
    }
    bool value() {
        if (!stack_.empty() && !stack_.back().is_object) ++stack_.back().index;
        return true;
    }
    bool end_container() {
        stack_.pop_back();
        return value();  // the container was a value of its parent
    }

    std::string_view text_;
    const std::string& file_;
    Problems& out_;
    std::vector<Frame> stack_;
    std::size_t dropped_ = 0;  // problems past kMaxMappingProblems, counted only
    bool syntax_error_ = false;
    bool too_deep_ = false;
};

const char* type_name(const json& v) {
    switch (v.type()) {
        case json::value_t::null: return "null";
        case json::value_t::boolean: return "a boolean";
        case json::value_t::string: return "a string";
        case json::value_t::array: return "an array";
        case json::value_t::object: return "an object";
        case json::value_t::number_float: return "a fractional number";
        default: return "a number";
    }
}

// Walks the document with the JSON Pointer of each value at hand; each check that
// fails records a Problem and yields nothing, so checking goes on past the first
// error and a Mapping is built only when there were none.
class Checker {
public:
    Checker(const std::string& file, Problems& out) : file_(file), out_(out) {}

    void problem(const std::string& at, std::string reason) { out_.push_back({file_, at, std::move(reason)}); }

    // Refuses keys outside `allowed` (typos) and reports missing `required` ones.
    bool object(const json& v, const std::string& at, std::initializer_list<std::string_view> allowed,
                std::initializer_list<std::string_view> required) {
        if (!v.is_object()) {
            problem(at, std::string("must be an object, not ") + type_name(v));
            return false;
        }
        for (const auto& [k, _] : v.items()) {
            if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
                std::string list;
                for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
                problem(child(at, k), "unknown key " + in_quotes(k) + " (allowed here: " + list + ")");
            }
        }
        for (auto r : required)
            if (!v.contains(r)) problem(at, "missing required key " + in_quotes(r));
        return true;
    }

    std::optional<std::uint64_t> integer(const json& v, const std::string& at, std::uint64_t min,
                                         std::uint64_t max, std::string_view what) {
        const std::string range = std::to_string(min) + ".." + std::to_string(max);
        std::optional<std::int64_t> signed_value;
        std::optional<std::uint64_t> value;
        if (v.is_number_unsigned()) {
            value = v.get<std::uint64_t>();
        } else if (v.is_number_integer()) {
            signed_value = v.get<std::int64_t>();
        } else if (v.is_number_float()) {
            // JSON Schema counts 100.0 as an integer; stay in step with it.
            const double d = v.get<double>();
            if (std::trunc(d) != d || !std::isfinite(d)) {
                problem(at, std::string(what) + " must be a whole number, not " + v.dump());
                return std::nullopt;
            }
            if (d < 0) signed_value = -1;
            else if (d > 1.8e19) value = UINT64_MAX;
            else value = static_cast<std::uint64_t>(d);
        } else {
            problem(at, std::string(what) + " must be an integer, not " + type_name(v));
            return std::nullopt;
        }
        if (signed_value && *signed_value >= 0) value = static_cast<std::uint64_t>(*signed_value);
        if (!value || *value < min || *value > max) {
            problem(at, v.dump() + " is out of range: " + std::string(what) + " must be " + range);
            return std::nullopt;
        }
        return value;
    }

    // An optional integer member: absent leaves `out` at its default. False on a problem.
    template <class T>
    bool optional_integer(const json& obj, const std::string& at, std::string_view key, T& out, std::uint64_t min,
                          std::uint64_t max, std::string_view what) {
        if (!obj.contains(key)) return true;
        auto v = integer(obj[key], child(at, key), min, max, what);
        if (v) out = static_cast<T>(*v);
        return v.has_value();
    }

    std::optional<std::string> string(const json& v, const std::string& at, std::string_view what) {
        if (!v.is_string()) {
            problem(at, std::string(what) + " must be a string, not " + type_name(v));
            return std::nullopt;
        }
        return v.get<std::string>();
    }

    // Linux's dev_valid_name(): 1..15 bytes, not "." or "..", no '/', ':' or space.
    std::optional<std::string> netdev(const json& v, const std::string& at) {
        auto s = string(v, at, "a netdev name");
        if (!s) return std::nullopt;
        if (s->empty() || s->size() > 15) {
            problem(at, in_quotes(*s) + " is not a valid netdev name: it must be 1..15 bytes long");
            return std::nullopt;
        }
        if (*s == "." || *s == ".." ||
            std::any_of(s->begin(), s->end(), [](unsigned char c) { return c == '/' || c == ':' || std::isspace(c) || c < 0x20; })) {
            problem(at, in_quotes(*s) + " is not a valid netdev name: no '/', ':', whitespace, '.' or '..'");
            return std::nullopt;
        }
        return s;
    }

    std::optional<IpAddress> address(const json& v, const std::string& at, std::string_view what) {
        auto s = string(v, at, what);
        if (!s) return std::nullopt;
        auto a = IpAddress::parse(*s);
        if (!a) {
            problem(at, in_quotes(*s) + " is not an IPv4 or IPv6 address");
            return std::nullopt;
        }
        if (a->is_special()) {
            problem(at, in_quotes(*s) + " cannot be " + std::string(what) +
                            ": unspecified, loopback, multicast and broadcast addresses are refused");
            return std::nullopt;
        }
        return a;
    }

private:
    const std::string& file_;
    Problems& out_;
};

std::optional<std::uint16_t> u16(std::optional<std::uint64_t> v) {
    if (!v) return std::nullopt;
    return static_cast<std::uint16_t>(*v);
}
std::optional<std::uint32_t> u32(std::optional<std::uint64_t> v) {
    if (!v) return std::nullopt;
    return static_cast<std::uint32_t>(*v);
}

constexpr std::uint32_t kMaxVni = 16777215;

std::optional<VxlanDevice> check_vxlan(Checker& c, const json& v, const std::string& at) {
    if (!c.object(v, at, {"device", "port"}, {"device"})) return std::nullopt;
    VxlanDevice out;
    bool ok = true;
    if (v.contains("device")) {
        auto d = c.netdev(v["device"], child(at, "device"));
        ok &= d.has_value();
        if (d) out.device = *d;
    }
    ok &= c.optional_integer(v, at, "port", out.port, 1, 65535, "a UDP port");
    return ok && v.contains("device") ? std::optional(out) : std::nullopt;
}

std::optional<IpAddress> check_local_vtep(Checker& c, const json& v, const std::string& at) {
    if (!v.contains("local_vtep")) return std::nullopt;
    return c.address(v["local_vtep"], child(at, "local_vtep"), "a local VTEP");
}

std::optional<AciFabric> check_aci(Checker& c, const json& v, const std::string& at) {
    if (!c.object(v, at, {"vlan", "local_vtep"}, {"local_vtep"})) return std::nullopt;
    AciFabric out;
    bool ok = true;
    ok &= c.optional_integer(v, at, "vlan", out.vlan, 1, 4094, "a VLAN id");
    auto vtep = check_local_vtep(c, v, at);
    if (!vtep) return std::nullopt;
    out.local_vtep = *vtep;
    return ok ? std::optional(out) : std::nullopt;
}

std::optional<EvpnFabric> check_evpn(Checker& c, const json& v, const std::string& at) {
    if (!c.object(v, at, {"local_vtep"}, {"local_vtep"})) return std::nullopt;
    auto vtep = check_local_vtep(c, v, at);
    if (!vtep) return std::nullopt;
    return EvpnFabric{*vtep};
}

// The VXLAN half of an interface: {"vni": N, "remote_vtep": "addr"}.
template <class Encap>
std::optional<Encap> check_tunnel(Checker& c, const json& v, const std::string& at) {
    if (!c.object(v, at, {"vni", "remote_vtep"}, {"vni", "remote_vtep"})) return std::nullopt;
    std::optional<std::uint32_t> vni;
    std::optional<IpAddress> remote;
    if (v.contains("vni")) vni = u32(c.integer(v["vni"], child(at, "vni"), 1, kMaxVni, "a VNI"));
    if (v.contains("remote_vtep")) remote = c.address(v["remote_vtep"], child(at, "remote_vtep"), "a remote VTEP");
    if (!vni || !remote) return std::nullopt;
    return Encap{*vni, *remote};
}

std::optional<Interface> check_interface(Checker& c, const json& v, const std::string& at) {
    if (!c.object(v, at, {"name", "netdev", "role", "vlan", "evpn", "aci"}, {"name", "netdev", "role"}))
        return std::nullopt;
    Interface out;
    bool ok = true;
    if (v.contains("name")) {
        const auto p = child(at, "name");
        auto s = c.string(v["name"], p, "an interface name");
        // The name appears in logs, counters and rule cookies: keep it plain.
        const bool plain = s && !s->empty() && s->size() <= 32 &&
                           std::isalnum(static_cast<unsigned char>((*s)[0])) &&
                           std::all_of(s->begin(), s->end(), [](unsigned char ch) {
                               return std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.';
                           });
        if (s && !plain)
            c.problem(p, in_quotes(*s) + " is not a valid interface name: 1..32 of [A-Za-z0-9._-], starting with a letter or digit");
        ok &= plain;
        if (plain) out.name = *s;
    }
    if (v.contains("netdev")) {
        auto d = c.netdev(v["netdev"], child(at, "netdev"));
        ok &= d.has_value();
        if (d) out.netdev = *d;
    }
    if (v.contains("role")) {
        const auto p = child(at, "role");
        auto s = c.string(v["role"], p, "a role");
        if (s && *s == "inner") out.role = Role::Inner;
        else if (s && *s == "outer") out.role = Role::Outer;
        else {
            if (s) c.problem(p, in_quotes(*s) + " is not a role: it must be 'inner' or 'outer'");
            ok = false;
        }
    }
    const int encaps = int(v.contains("vlan")) + int(v.contains("evpn")) + int(v.contains("aci"));
    if (encaps != 1) {
        c.problem(at, encaps == 0 ? "needs exactly one of 'vlan', 'evpn', 'aci': none given"
                                  : "needs exactly one of 'vlan', 'evpn', 'aci': " + std::to_string(encaps) + " given");
        ok = false;
    }
    if (v.contains("vlan")) {
        auto vid = u16(c.integer(v["vlan"], child(at, "vlan"), 1, 4094, "a VLAN id"));
        if (vid) out.encap = VlanEncap{*vid};
        ok &= vid.has_value();
    }
    if (v.contains("evpn")) {
        auto e = check_tunnel<EvpnEncap>(c, v["evpn"], child(at, "evpn"));
        if (e) out.encap = *e;
        ok &= e.has_value();
    }
    if (v.contains("aci")) {
        auto e = check_tunnel<AciEncap>(c, v["aci"], child(at, "aci"));
        if (e) out.encap = *e;
        ok &= e.has_value();
    }
    if (!ok || !v.contains("name") || !v.contains("netdev") || !v.contains("role")) return std::nullopt;
    return out;
}

std::optional<NatLogging> check_nat_logging(Checker& c, const json& v, const std::string& at) {
    if (!c.object(v, at, {"collectors", "template_refresh_seconds", "observation_domain_id"}, {"collectors"}))
        return std::nullopt;
    NatLogging out;
    bool ok = v.contains("collectors");
    if (v.contains("collectors")) {
        const auto p = child(at, "collectors");
        const json& list = v["collectors"];
        if (!list.is_array() || list.empty() || list.size() > kMaxCollectors) {
            c.problem(p, list.is_array() ? "must hold 1.." + std::to_string(kMaxCollectors) + " collectors, not " +
                                               std::to_string(list.size())
                                         : std::string("must be an array of collectors, not ") + type_name(list));
            ok = false;
        } else {
            for (std::size_t i = 0; i < list.size(); ++i) {
                const auto pi = child(p, i);
                auto s = c.string(list[i], pi, "a collector");
                if (!s) { ok = false; continue; }
                auto col = Collector::parse(*s);
                if (!col) {
                    c.problem(pi, in_quotes(*s) + " is not a collector like 192.0.2.10:4739 or [2001:db8::10]:4739 "
                                                  "(an address and a port 1..65535)");
                    ok = false;
                    continue;
                }
                if (std::find(out.collectors.begin(), out.collectors.end(), *col) != out.collectors.end()) {
                    c.problem(pi, in_quotes(*s) + " is listed twice: each collector would get every record twice");
                    ok = false;
                    continue;
                }
                out.collectors.push_back(*col);
            }
        }
    }
    ok &= c.optional_integer(v, at, "template_refresh_seconds", out.template_refresh_seconds, 1, 3600,
                             "a template refresh interval in seconds");
    ok &= c.optional_integer(v, at, "observation_domain_id", out.observation_domain_id, 0, 4294967295u,
                             "an IPFIX observation domain id");
    return ok ? std::optional(out) : std::nullopt;
}

std::optional<Nat> check_nat(Checker& c, const json& v, const std::string& at) {
    if (!c.object(v, at, {"zone", "pool", "ports", "chunk_size", "max_chunks_per_subscriber", "chunk_idle_seconds",
                   "first_packet_rate", "logging"},
                  {"zone", "pool"}))
        return std::nullopt;
    Nat out;
    bool ok = v.contains("zone") && v.contains("pool");
    ok &= c.optional_integer(v, at, "zone", out.zone, 0, 65535, "a conntrack zone");
    if (v.contains("pool")) {
        const auto p = child(at, "pool");
        const json& pool = v["pool"];
        if (!pool.is_array() || pool.empty()) {
            c.problem(p, pool.is_array() ? "the pool must hold at least one IPv4 prefix"
                                         : std::string("must be an array of IPv4 prefixes, not ") + type_name(pool));
            ok = false;
        } else {
            for (std::size_t i = 0; i < pool.size(); ++i) {
                const auto pi = child(p, i);
                auto s = c.string(pool[i], pi, "a pool prefix");
                if (!s) { ok = false; continue; }
                auto prefix = IpPrefix::parse(*s);
                if (!prefix) {
                    c.problem(pi, in_quotes(*s) + " is not an IPv4 prefix like 198.51.100.0/28");
                    ok = false;
                    continue;
                }
                if (prefix->address.family != Family::V4) {
                    c.problem(pi, in_quotes(*s) + " is IPv6: the NAT pool is IPv4 only (IPv6 is routed, not translated)");
                    ok = false;
                    continue;
                }
                if (!prefix->is_canonical()) {
                    c.problem(pi, in_quotes(*s) + " has host bits set beyond /" + std::to_string(prefix->length));
                    ok = false;
                    continue;
                }
                if (prefix->length == 0 || prefix->address.is_special()) {
                    c.problem(pi, in_quotes(*s) + " cannot be a NAT pool: it covers unspecified, loopback, multicast or broadcast addresses");
                    ok = false;
                    continue;
                }
                for (std::size_t j = 0; j < out.pool.size(); ++j) {
                    if (out.pool[j].overlaps(*prefix)) {
                        c.problem(pi, in_quotes(*s) + " overlaps " + out.pool[j].str() + " earlier in the pool");
                        ok = false;
                    }
                }
                out.pool.push_back(*prefix);
            }
        }
    }
    bool ports_ok = true;
    if (v.contains("ports")) {
        const auto p = child(at, "ports");
        if (c.object(v["ports"], p, {"first", "last"}, {"first", "last"})) {
            const json& ports = v["ports"];
            std::optional<std::uint16_t> first, last;
            if (ports.contains("first")) first = u16(c.integer(ports["first"], child(p, "first"), 1, 65535, "a port"));
            if (ports.contains("last")) last = u16(c.integer(ports["last"], child(p, "last"), 1, 65535, "a port"));
            if (first && last && *first > *last) {
                c.problem(child(p, "last"), "the port range is empty: last (" + std::to_string(*last) +
                                                ") is below first (" + std::to_string(*first) + ")");
                ports_ok = false;
            }
            if (!first || !last) ports_ok = false;
            else if (ports_ok) out.ports = PortRange{*first, *last};
        } else {
            ports_ok = false;
        }
    }
    ok &= ports_ok;
    if (v.contains("chunk_size")) {
        const auto p = child(at, "chunk_size");
        auto size = u32(c.integer(v["chunk_size"], p, 1, 65535, "a chunk size"));
        if (size && ports_ok && *size > out.ports.size()) {
            c.problem(p, "a chunk of " + std::to_string(*size) + " ports does not fit the port range " +
                             std::to_string(out.ports.first) + ".." + std::to_string(out.ports.last) + " (" +
                             std::to_string(out.ports.size()) + " ports)");
            size.reset();
        }
        ok &= size.has_value();
        if (size) out.chunk_size = *size;
    } else if (ports_ok && out.chunk_size > out.ports.size()) {
        c.problem(at, "the default chunk size of " + std::to_string(out.chunk_size) +
                          " ports does not fit the port range: set 'chunk_size'");
        ok = false;
    }
    ok &= c.optional_integer(v, at, "max_chunks_per_subscriber", out.max_chunks_per_subscriber, 1, 65535,
                             "a chunk count");
    ok &= c.optional_integer(v, at, "chunk_idle_seconds", out.chunk_idle_seconds, 1, 86400, "an idle time in seconds");
    ok &= c.optional_integer(v, at, "first_packet_rate", out.first_packet_rate, 10, 1000000,
                             "first packets per second and ingress device");
    if (v.contains("logging")) {
        out.logging = check_nat_logging(c, v["logging"], child(at, "logging"));
        ok &= out.logging.has_value();
    }
    // All of a subscriber's chunks sit on one public address (paired pooling), so
    // they must fit the port range of one address.
    if (ok && out.max_chunks_per_subscriber > out.chunks_per_address()) {
        c.problem(child(at, "max_chunks_per_subscriber"),
                  std::to_string(out.max_chunks_per_subscriber) + " chunks of " + std::to_string(out.chunk_size) +
                      " ports do not fit on one public address: its port range holds " +
                      std::to_string(out.chunks_per_address()) + " (a subscriber's chunks share one address)");
        ok = false;
    }
    return ok ? std::optional(out) : std::nullopt;
}

// What must be unique across interfaces, with where it was first seen.
template <class Key>
class FirstSeen {
public:
    // Returns the path where `key` was first seen, or nothing if this is the first time.
    std::optional<std::string> add(const Key& key, const std::string& at, const std::string& owner) {
        auto [it, fresh] = seen_.emplace(key, std::pair{at, owner});
        if (fresh) return std::nullopt;
        return "already used by interface " + in_quotes(it->second.second) + " (" + it->second.first + ")";
    }

private:
    std::map<Key, std::pair<std::string, std::string>> seen_;
};

// `indices[i]` is where m.interfaces[i] sits in the file: interfaces that failed their
// own checks are left out, and the rest are still compared with each other.
void check_relations(Checker& c, const Mapping& m, const std::vector<std::size_t>& indices, const json& doc) {
    FirstSeen<std::string> names, netdevs;
    FirstSeen<std::uint16_t> vlans;
    FirstSeen<std::uint32_t> vnis;
    const std::string ifs = "/interfaces";
    for (std::size_t i = 0; i < m.interfaces.size(); ++i) {
        const Interface& itf = m.interfaces[i];
        const auto at = child(ifs, indices[i]);
        if (auto dup = names.add(itf.name, child(at, "name"), itf.name))
            c.problem(child(at, "name"), "interface name " + in_quotes(itf.name) + " is " + *dup);
        if (auto dup = netdevs.add(itf.netdev, child(at, "netdev"), itf.name))
            c.problem(child(at, "netdev"), "netdev " + in_quotes(itf.netdev) + " is " + *dup);
        if (itf.netdev == m.uplink)
            c.problem(child(at, "netdev"), "netdev " + in_quotes(itf.netdev) +
                                               " is the uplink itself: an interface is a VLAN or VXLAN device on top of it");
        if (m.vxlan && itf.netdev == m.vxlan->device)
            c.problem(child(at, "netdev"), "netdev " + in_quotes(itf.netdev) + " is the VXLAN device (/vxlan/device)");

        if (const auto* vlan = std::get_if<VlanEncap>(&itf.encap)) {
            const auto p = child(at, "vlan");
            // An 'aci' section that failed its own checks leaves the infra VLAN unknown.
            const bool infra_known = m.aci.has_value() || !doc.contains("aci");
            if (infra_known && vlan->vid == m.aci_vlan())
                c.problem(p, "VLAN " + std::to_string(vlan->vid) + " is the ACI infra VLAN" +
                                 (m.aci ? " (/aci/vlan)" : " (2 unless /aci/vlan says otherwise)") +
                                 ": it carries ACI's VXLAN and cannot name an interface");
            else if (auto dup = vlans.add(vlan->vid, p, itf.name))
                c.problem(p, "VLAN " + std::to_string(vlan->vid) + " is " + *dup);
            continue;
        }
        const bool is_evpn = std::holds_alternative<EvpnEncap>(itf.encap);
        const char* kind = is_evpn ? "evpn" : "aci";
        const auto p = child(at, kind);
        const std::uint32_t vni = is_evpn ? std::get<EvpnEncap>(itf.encap).vni : std::get<AciEncap>(itf.encap).vni;
        const IpAddress& remote =
            is_evpn ? std::get<EvpnEncap>(itf.encap).remote_vtep : std::get<AciEncap>(itf.encap).remote_vtep;
        if (auto dup = vnis.add(vni, child(p, "vni"), itf.name))
            c.problem(child(p, "vni"), "VNI " + std::to_string(vni) + " is " + *dup);
        if (!doc.contains("vxlan"))
            c.problem(p, std::string("a VXLAN interface needs the top-level 'vxlan' section (the metadata-mode VXLAN device)"));
        const std::optional<IpAddress> local = is_evpn ? (m.evpn ? std::optional(m.evpn->local_vtep) : std::nullopt)
                                                       : (m.aci ? std::optional(m.aci->local_vtep) : std::nullopt);
        if (!doc.contains(kind)) {
            c.problem(p, std::string("an ") + kind + " interface needs the top-level '" + kind +
                             "' section with the local VTEP");
        } else if (local) {
            if (local->family != remote.family)
                c.problem(child(p, "remote_vtep"), "remote VTEP " + remote.str() + " and local VTEP " + local->str() +
                                                       " (/" + kind + "/local_vtep) are of different IP families");
            else if (*local == remote)
                c.problem(child(p, "remote_vtep"), "remote VTEP " + remote.str() + " is the local VTEP itself");
        }
    }
    if (m.vxlan && m.vxlan->device == m.uplink)
        c.problem("/vxlan/device", "the VXLAN device cannot be the uplink " + in_quotes(m.uplink));
}

}  // namespace

Result<Mapping, Problems> parse_mapping(std::string_view text, const std::string& file) {
    Problems problems;
    if (text.size() > kMaxMappingBytes)
        return fail(Problems{{file, "", "larger than " + std::to_string(kMaxMappingBytes >> 20) +
                                            " MiB: not a mapping file (a few KiB describe thousands of interfaces)"}});
    DuplicateKeyFinder finder(text, file, problems);
    json::sax_parse(text, &finder);
    const auto capped = [&](Problems ps) {
        std::size_t more = finder.dropped();
        if (ps.size() > kMaxMappingProblems) {
            more += ps.size() - kMaxMappingProblems;
            ps.resize(kMaxMappingProblems);
        }
        if (more > 0) ps.push_back({file, "", std::to_string(more) + " more problems: not shown"});
        return ps;
    };
    if (finder.syntax_error() || finder.too_deep()) return fail(capped(std::move(problems)));
    const json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) {  // the SAX pass should have caught it; never trust that blindly
        problems.push_back({file, "", "not valid JSON"});
        return fail(std::move(problems));
    }

    Checker c(file, problems);
    Mapping m;
    if (!c.object(doc, "", {"$schema", "uplink", "vxlan", "aci", "evpn", "interfaces", "nat", "route_table"},
                  {"uplink", "interfaces"}))
        return fail(std::move(problems));

    if (doc.contains("$schema")) (void)c.string(doc["$schema"], "/$schema", "'$schema'");
    if (doc.contains("uplink"))
        if (auto u = c.netdev(doc["uplink"], "/uplink")) m.uplink = *u;
    if (doc.contains("vxlan")) m.vxlan = check_vxlan(c, doc["vxlan"], "/vxlan");
    if (doc.contains("aci")) m.aci = check_aci(c, doc["aci"], "/aci");
    if (doc.contains("evpn")) m.evpn = check_evpn(c, doc["evpn"], "/evpn");
    std::vector<std::size_t> indices;
    if (doc.contains("interfaces")) {
        const json& ifs = doc["interfaces"];
        if (!ifs.is_array()) {
            c.problem("/interfaces", std::string("must be an array of interfaces, not ") + type_name(ifs));
        } else if (ifs.empty()) {
            c.problem("/interfaces", "at least one interface is needed");
        } else {
            for (std::size_t i = 0; i < ifs.size(); ++i) {
                if (auto itf = check_interface(c, ifs[i], child(std::string("/interfaces"), i))) {
                    m.interfaces.push_back(std::move(*itf));
                    indices.push_back(i);
                }
            }
        }
    }
    if (doc.contains("nat")) m.nat = check_nat(c, doc["nat"], "/nat");
    // 0 is "unspecified" to the kernel; table ids are 32-bit.
    (void)c.optional_integer(doc, "", "route_table", m.route_table, 1, 4294967295u, "a route table id");
    check_relations(c, m, indices, doc);

    if (!problems.empty()) return fail(capped(std::move(problems)));
    return m;
}

Result<Mapping, Problems> load_mapping(const std::string& file) {
    // Not blocking on a FIFO, and a regular file only: a directory, a device (/dev/zero
    // never ends) or a pipe is refused by what it is, before a byte is read.
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        const int err = errno;
        return fail(Problems{{file, "", std::string("cannot open: ") + std::strerror(err)}});
    }
    struct Close {
        int fd;
        ~Close() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        return fail(Problems{{file, "", std::string("cannot stat: ") + std::strerror(err)}});
    }
    if (!S_ISREG(st.st_mode)) {
        const char* what = S_ISDIR(st.st_mode)    ? "a directory"
                           : S_ISFIFO(st.st_mode) ? "a pipe"
                           : S_ISCHR(st.st_mode)  ? "a character device"
                           : S_ISBLK(st.st_mode)  ? "a block device"
                           : S_ISSOCK(st.st_mode) ? "a socket"
                                                  : "not a regular file";
        return fail(Problems{{file, "", std::string("is ") + what + ", not a mapping file"}});
    }
    // Read no more than the limit and one byte, whatever the size says (it may grow).
    std::string text;
    text.resize(std::min<std::size_t>(static_cast<std::size_t>(std::max<off_t>(st.st_size, 0)), kMaxMappingBytes) + 1);
    std::size_t got = 0;
    for (;;) {
        if (got == text.size()) {
            if (got > kMaxMappingBytes) break;
            text.resize(std::min(text.size() * 2, kMaxMappingBytes + 1));
        }
        const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int err = errno;
            return fail(Problems{{file, "", std::string("cannot read: ") + std::strerror(err)}});
        }
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
    }
    text.resize(got);
    return parse_mapping(text, file);
}

}  // namespace dpo
