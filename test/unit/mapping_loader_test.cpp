// SPDX-License-Identifier: GPL-2.0-or-later
// The mapping file as SPEC.md fixes it: what loads, into which values, and what is
// refused, where and why.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/mapping_loader.hpp"

using nlohmann::json;

namespace {

// SPEC.md's example, verbatim; test/schema/test_schema.py reads the same file.
std::string spec_text() {
    std::ifstream in(DPO_TEST_DATA_DIR "/spec-example.json");
    REQUIRE(in);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

json spec() { return json::parse(spec_text()); }

dpo::Problems problems_of(const json& doc) {
    auto r = dpo::parse_mapping(doc.dump(2), "m.json");
    if (r) return {};
    return r.error();
}

dpo::Problems problems_of_text(const std::string& text) {
    auto r = dpo::parse_mapping(text, "m.json");
    if (r) return {};
    return r.error();
}

std::string all(const dpo::Problems& ps) {
    std::string s;
    for (const auto& p : ps) s += p.str() + "\n";
    return s;
}

// True when some problem sits at `path` and its reason contains `words`.
bool has(const dpo::Problems& ps, const std::string& path, const std::string& words) {
    for (const auto& p : ps)
        if (p.path == path && p.reason.find(words) != std::string::npos && p.file == "m.json") return true;
    return false;
}

}  // namespace

TEST_CASE("SPEC.md's example loads into typed values") {
    auto r = dpo::parse_mapping(spec_text(), "spec.json");
    REQUIRE(r.ok());
    const dpo::Mapping& m = *r;
    CHECK(m.uplink == "p0");
    REQUIRE(m.vxlan);
    CHECK(m.vxlan->device == "vxlan0");
    CHECK(m.vxlan->port == 4789);
    REQUIRE(m.aci);
    CHECK(m.aci->vlan == 2);
    CHECK(m.aci->local_vtep.str() == "10.0.2.1");
    REQUIRE(m.evpn);
    CHECK(m.evpn->local_vtep.str() == "10.0.1.1");
    REQUIRE(m.interfaces.size() == 4);

    CHECK(m.interfaces[0].name == "blue");
    CHECK(m.interfaces[0].netdev == "p0.100");
    CHECK(m.interfaces[0].role == dpo::Role::Inner);
    REQUIRE(std::holds_alternative<dpo::VlanEncap>(m.interfaces[0].encap));
    CHECK(std::get<dpo::VlanEncap>(m.interfaces[0].encap).vid == 100);

    REQUIRE(std::holds_alternative<dpo::EvpnEncap>(m.interfaces[1].encap));
    CHECK(std::get<dpo::EvpnEncap>(m.interfaces[1].encap).vni == 5001);
    CHECK(std::get<dpo::EvpnEncap>(m.interfaces[1].encap).remote_vtep.str() == "10.0.1.2");

    REQUIRE(std::holds_alternative<dpo::AciEncap>(m.interfaces[2].encap));
    CHECK(std::get<dpo::AciEncap>(m.interfaces[2].encap).vni == 6001);
    CHECK(m.interfaces[3].role == dpo::Role::Outer);

    REQUIRE(m.nat);
    CHECK(m.nat->zone == 1);
    REQUIRE(m.nat->pool.size() == 1);
    CHECK(m.nat->pool[0].str() == "198.51.100.0/28");
    CHECK(m.nat->ports.first == 1024);
    CHECK(m.nat->ports.last == 65535);
    CHECK(m.nat->chunk_size == 512);
    CHECK(m.nat->chunks_per_address() == 126);
    CHECK(m.nat->max_chunks_per_subscriber == 4);
    CHECK(m.nat->chunk_idle_seconds == 120);
    CHECK(m.route_table == 254);
}

TEST_CASE("optional sections and fields take their documented defaults") {
    json d = {{"uplink", "p0"},
              {"interfaces", {{{"name", "blue"}, {"netdev", "p0.100"}, {"role", "inner"}, {"vlan", 100}}}}};
    auto r = dpo::parse_mapping(d.dump(), "m.json");
    REQUIRE(r.ok());
    CHECK_FALSE(r->nat);
    CHECK_FALSE(r->vxlan);
    CHECK(r->route_table == 254);
    CHECK(r->aci_vlan() == 2);

    json s = spec();
    s["vxlan"].erase("port");
    s["aci"].erase("vlan");
    s["nat"].erase("ports");
    s["nat"].erase("chunk_size");
    s["nat"].erase("max_chunks_per_subscriber");
    s["nat"].erase("chunk_idle_seconds");
    auto q = dpo::parse_mapping(s.dump(), "m.json");
    REQUIRE(q.ok());
    CHECK(q->vxlan->port == 4789);
    CHECK(q->aci->vlan == 2);
    CHECK(q->nat->ports.first == 1024);
    CHECK(q->nat->ports.last == 65535);
    CHECK(q->nat->chunk_size == 512);
    CHECK(q->nat->max_chunks_per_subscriber == 4);
    CHECK(q->nat->chunk_idle_seconds == 120);
    CHECK(q->nat->first_packet_rate == 1000);
}

TEST_CASE("nat.first_packet_rate: packets a second, 10..1000000") {
    json s = spec();
    s["nat"]["first_packet_rate"] = 250;
    auto q = dpo::parse_mapping(s.dump(), "m.json");
    REQUIRE(q.ok());
    CHECK(q->nat->first_packet_rate == 250);
    for (int bad : {0, 9, 1000001}) {
        s["nat"]["first_packet_rate"] = bad;
        auto r = dpo::parse_mapping(s.dump(), "m.json");
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().front().path == "/nat/first_packet_rate");
    }
}

TEST_CASE("a problem names the file, the JSON path and the reason") {
    json d = spec();
    d["interfaces"][2]["aci"]["vni"] = 16777216;
    auto ps = problems_of(d);
    REQUIRE(ps.size() == 1);
    CHECK(ps[0].str() == "m.json: /interfaces/2/aci/vni: 16777216 is out of range: a VNI must be 1..16777215");
}

TEST_CASE("every problem is reported, not just the first") {
    json d = spec();
    d["uplink"] = "";
    d["interfaces"][0]["vlan"] = 4095;
    d["interfaces"][1]["role"] = "middle";
    d["nat"]["pool"][0] = "198.51.100.1/28";
    d["route_table"] = 0;
    auto ps = problems_of(d);
    INFO(all(ps));
    CHECK(ps.size() == 5);
    CHECK(has(ps, "/uplink", "1..15 bytes"));
    CHECK(has(ps, "/interfaces/0/vlan", "1..4094"));
    CHECK(has(ps, "/interfaces/1/role", "'inner' or 'outer'"));
    CHECK(has(ps, "/nat/pool/0", "host bits"));
    CHECK(has(ps, "/route_table", "out of range"));
}

TEST_CASE("unknown keys are refused wherever they are, so typos are caught") {
    json d = spec();
    d["uplnk"] = "p1";
    d["interfaces"][0]["vlna"] = 7;
    d["nat"]["ports"]["frist"] = 1;
    d["vxlan"]["mtu"] = 1450;
    auto ps = problems_of(d);
    INFO(all(ps));
    CHECK(ps.size() == 4);
    CHECK(has(ps, "/uplnk", "unknown key 'uplnk'"));
    CHECK(has(ps, "/interfaces/0/vlna", "unknown key"));
    CHECK(has(ps, "/nat/ports/frist", "unknown key"));
    CHECK(has(ps, "/vxlan/mtu", "unknown key"));
}

TEST_CASE("missing required keys are named at their parent") {
    json d = spec();
    d.erase("uplink");
    d["interfaces"][3].erase("role");
    d["interfaces"][1]["evpn"].erase("remote_vtep");
    d["nat"].erase("pool");
    auto ps = problems_of(d);
    INFO(all(ps));
    CHECK(has(ps, "", "missing required key 'uplink'"));
    CHECK(has(ps, "/interfaces/3", "missing required key 'role'"));
    CHECK(has(ps, "/interfaces/1/evpn", "missing required key 'remote_vtep'"));
    CHECK(has(ps, "/nat", "missing required key 'pool'"));
}

TEST_CASE("an interface has exactly one encapsulation") {
    json d = spec();
    d["interfaces"][0]["evpn"] = {{"vni", 7}, {"remote_vtep", "10.0.1.9"}};
    d["interfaces"][3].erase("vlan");
    auto ps = problems_of(d);
    INFO(all(ps));
    CHECK(has(ps, "/interfaces/0", "exactly one of 'vlan', 'evpn', 'aci': 2 given"));
    CHECK(has(ps, "/interfaces/3", "exactly one of 'vlan', 'evpn', 'aci': none given"));
}

TEST_CASE("names, netdevs, VLAN ids and VNIs are unique") {
    json d = spec();
    d["interfaces"].push_back({{"name", "blue"}, {"netdev", "p0.200"}, {"role", "outer"}, {"vlan", 100}});
    d["interfaces"].push_back({{"name", "web2"}, {"netdev", "svi-web2"}, {"role", "inner"},
                               {"evpn", {{"vni", 6001}, {"remote_vtep", "10.0.1.2"}}}});
    auto ps = problems_of(d);
    INFO(all(ps));
    CHECK(ps.size() == 4);
    CHECK(has(ps, "/interfaces/4/name", "already used by interface 'blue' (/interfaces/0/name)"));
    CHECK(has(ps, "/interfaces/4/netdev", "already used by interface 'transit' (/interfaces/3/netdev)"));
    CHECK(has(ps, "/interfaces/4/vlan", "VLAN 100 is already used by interface 'blue'"));
    CHECK(has(ps, "/interfaces/5/evpn/vni", "VNI 6001 is already used by interface 'web' (/interfaces/2/aci/vni)"));
}

TEST_CASE("the ACI infra VLAN cannot name a VLAN interface") {
    json d = spec();
    d["interfaces"][0]["vlan"] = 2;
    CHECK(has(problems_of(d), "/interfaces/0/vlan", "ACI infra VLAN"));

    // Without an 'aci' section the infra VLAN is still 2.
    json e = {{"uplink", "p0"},
              {"interfaces", {{{"name", "blue"}, {"netdev", "p0.2"}, {"role", "inner"}, {"vlan", 2}}}}};
    CHECK(has(problems_of(e), "/interfaces/0/vlan", "ACI infra VLAN"));

    // Moving the infra VLAN frees 2 and reserves the new one.
    json f = spec();
    f["aci"]["vlan"] = 3;
    f["interfaces"][0]["vlan"] = 2;
    CHECK(problems_of(f).empty());
    f["interfaces"][3]["vlan"] = 3;
    CHECK(has(problems_of(f), "/interfaces/3/vlan", "ACI infra VLAN (/aci/vlan)"));
}

TEST_CASE("range edges: VLAN 1..4094, VNI 1..16777215, ports 1..65535") {
    json d = spec();
    d["aci"]["vlan"] = 4094;
    d["interfaces"][0]["vlan"] = 1;
    d["interfaces"][3]["vlan"] = 4093;
    d["interfaces"][1]["evpn"]["vni"] = 1;
    d["interfaces"][2]["aci"]["vni"] = 16777215;
    d["vxlan"]["port"] = 65535;
    CHECK(problems_of(d).empty());

    for (auto [where, value] : std::vector<std::pair<json::json_pointer, json>>{
             {json::json_pointer("/interfaces/0/vlan"), 0},
             {json::json_pointer("/interfaces/0/vlan"), -1},
             {json::json_pointer("/interfaces/0/vlan"), 4095},
             {json::json_pointer("/aci/vlan"), 0},
             {json::json_pointer("/interfaces/1/evpn/vni"), 0},
             {json::json_pointer("/vxlan/port"), 0},
             {json::json_pointer("/vxlan/port"), 65536},
             {json::json_pointer("/nat/zone"), 65536},
             {json::json_pointer("/interfaces/0/vlan"), 100.5},
             {json::json_pointer("/interfaces/0/vlan"), "100"},
             {json::json_pointer("/interfaces/0/vlan"), true},
         }) {
        json e = spec();
        e[where] = value;
        INFO(where.to_string() << " = " << value.dump());
        auto ps = problems_of(e);
        CHECK(ps.size() == 1);
        CHECK(has(ps, where.to_string(), ""));
    }
    // JSON Schema counts 100.0 as an integer; so does the loader.
    json g = spec();
    g["interfaces"][0]["vlan"] = 100.0;
    CHECK(problems_of(g).empty());
}

TEST_CASE("netdev names follow the kernel's rules") {
    for (const char* bad : {"", "sixteen-chars-xx", "a/b", "a:b", "a b", ".", ".."}) {
        json d = spec();
        d["interfaces"][0]["netdev"] = bad;
        INFO(bad);
        CHECK(has(problems_of(d), "/interfaces/0/netdev", "not a valid netdev name"));
    }
    json d = spec();
    d["interfaces"][0]["netdev"] = "fifteen-chars-x";
    CHECK(problems_of(d).empty());
}

TEST_CASE("an interface cannot be the uplink or the VXLAN device") {
    json d = spec();
    d["interfaces"][0]["netdev"] = "p0";
    d["interfaces"][3]["netdev"] = "vxlan0";
    auto ps = problems_of(d);
    INFO(all(ps));
    CHECK(has(ps, "/interfaces/0/netdev", "is the uplink itself"));
    CHECK(has(ps, "/interfaces/3/netdev", "is the VXLAN device"));
    json e = spec();
    e["vxlan"]["device"] = "p0";
    CHECK(has(problems_of(e), "/vxlan/device", "cannot be the uplink"));
}

TEST_CASE("VXLAN interfaces need their fabric sections") {
    json d = spec();
    d.erase("vxlan");
    d.erase("evpn");
    auto ps = problems_of(d);
    INFO(all(ps));
    CHECK(has(ps, "/interfaces/1/evpn", "top-level 'vxlan' section"));
    CHECK(has(ps, "/interfaces/2/aci", "top-level 'vxlan' section"));
    CHECK(has(ps, "/interfaces/1/evpn", "top-level 'evpn' section"));
    CHECK_FALSE(has(ps, "/interfaces/2/aci", "top-level 'aci' section"));
}

TEST_CASE("VTEPs: valid unicast addresses, one family per tunnel, not the local VTEP") {
    json d = spec();
    d["evpn"]["local_vtep"] = "10.0.1.300";
    d["aci"]["local_vtep"] = "224.0.0.5";
    auto ps = problems_of(d);
    INFO(all(ps));
    CHECK(has(ps, "/evpn/local_vtep", "not an IPv4 or IPv6 address"));
    CHECK(has(ps, "/aci/local_vtep", "multicast"));

    json e = spec();
    e["interfaces"][1]["evpn"]["remote_vtep"] = "fd00::2";
    e["interfaces"][2]["aci"]["remote_vtep"] = "10.0.2.1";
    auto qs = problems_of(e);
    INFO(all(qs));
    CHECK(has(qs, "/interfaces/1/evpn/remote_vtep", "different IP families"));
    CHECK(has(qs, "/interfaces/2/aci/remote_vtep", "is the local VTEP itself"));

    json f = spec();
    f["evpn"]["local_vtep"] = "fd00:1::1";
    f["interfaces"][1]["evpn"]["remote_vtep"] = "fd00:1::2";
    CHECK(problems_of(f).empty());
}

TEST_CASE("the NAT pool is IPv4 prefixes, canonical and disjoint") {
    json d = spec();
    d["nat"]["pool"] = {"198.51.100.0/28", "2001:db8::/64", "198.51.100.8/29", "10.0.0.0/33", "127.0.0.0/8",
                        "203.0.113.0/24", 5};
    auto ps = problems_of(d);
    INFO(all(ps));
    CHECK(ps.size() == 5);
    CHECK(has(ps, "/nat/pool/1", "IPv4 only"));
    CHECK(has(ps, "/nat/pool/2", "overlaps 198.51.100.0/28"));
    CHECK(has(ps, "/nat/pool/3", "not an IPv4 prefix"));
    CHECK(has(ps, "/nat/pool/4", "loopback"));
    CHECK(has(ps, "/nat/pool/6", "must be a string"));

    json e = spec();
    e["nat"]["pool"] = json::array();
    CHECK(has(problems_of(e), "/nat/pool", "at least one"));
}

TEST_CASE("chunks fit the port range, and a subscriber's chunks fit one address") {
    json d = spec();
    d["nat"]["ports"] = {{"first", 2000}, {"last", 1999}};
    CHECK(has(problems_of(d), "/nat/ports/last", "port range is empty"));

    json e = spec();
    e["nat"]["ports"] = {{"first", 1024}, {"last", 1535}};  // 512 ports
    CHECK(has(problems_of(e), "/nat/max_chunks_per_subscriber", "do not fit on one public address"));
    e["nat"]["max_chunks_per_subscriber"] = 1;
    CHECK(problems_of(e).empty());
    e["nat"]["chunk_size"] = 513;
    CHECK(has(problems_of(e), "/nat/chunk_size", "does not fit the port range 1024..1535 (512 ports)"));

    json f = spec();
    f["nat"]["ports"] = {{"first", 1024}, {"last", 1100}};
    f["nat"].erase("chunk_size");
    CHECK(has(problems_of(f), "/nat", "default chunk size of 512"));
}

TEST_CASE("duplicate keys are refused: the operator meant one of them") {
    auto ps = problems_of_text(R"({"uplink": "p0", "uplink": "p1", "interfaces": [
        {"name": "a", "netdev": "p0.5", "role": "inner", "vlan": 5, "vlan": 6}]})");
    INFO(all(ps));
    CHECK(has(ps, "/uplink", "appears more than once"));
    CHECK(has(ps, "/interfaces/0/vlan", "appears more than once"));
}

TEST_CASE("JSON syntax errors say where, as line and column") {
    auto ps = problems_of_text("{\n  \"uplink\": \"p0\",\n  \"interfaces\": [,]\n}\n");
    REQUIRE(ps.size() == 1);
    CHECK(ps[0].path.empty());
    CHECK(ps[0].reason.find("line 3, column 18") != std::string::npos);
    CHECK(has(problems_of_text(""), "", "not valid JSON"));
    CHECK(has(problems_of_text("[1, 2]"), "", "must be an object, not an array"));
}

TEST_CASE("JSON Pointer escapes '/' and '~' in keys") {
    auto ps = problems_of_text(R"({"uplink": "p0", "a/b~c": 1, "interfaces": [
        {"name": "a", "netdev": "p0.5", "role": "inner", "vlan": 5}]})");
    CHECK(has(ps, "/a~1b~0c", "unknown key 'a/b~c'"));
}

TEST_CASE("a file that cannot be read is a problem, not a crash") {
    auto r = dpo::load_mapping("/nonexistent/mapping.json");
    REQUIRE_FALSE(r.ok());
    REQUIRE(r.error().size() == 1);
    CHECK(r.error()[0].str() == "/nonexistent/mapping.json: (document): cannot open: No such file or directory");
}

TEST_CASE("an interface list that is empty or not a list is refused") {
    json d = spec();
    d["interfaces"] = json::array();
    CHECK(has(problems_of(d), "/interfaces", "at least one interface"));
    d["interfaces"] = json::object();
    CHECK(has(problems_of(d), "/interfaces", "must be an array"));
}

TEST_CASE("interfaces that fail their own checks do not hide relations between the others") {
    json d = spec();
    d["interfaces"][0]["vlan"] = 4095;           // interface 0 is broken
    d["interfaces"][3]["netdev"] = "svi-green";  // and 3 collides with 1
    auto ps = problems_of(d);
    INFO(all(ps));
    CHECK(ps.size() == 2);
    CHECK(has(ps, "/interfaces/0/vlan", "out of range"));
    CHECK(has(ps, "/interfaces/3/netdev", "already used by interface 'green' (/interfaces/1/netdev)"));
}

// ---------------------------------------------------------------- hostile files

namespace {
struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/dpo-mapping-XXXXXX";
        REQUIRE(mkdtemp(tmpl));
        path = tmpl;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string write(const std::string& name, const std::string& text) const {
        const std::string f = path + "/" + name;
        std::ofstream(f, std::ios::binary) << text;
        return f;
    }
};

dpo::Problems load_problems(const std::string& file) {
    auto r = dpo::load_mapping(file);
    if (r) return {};
    return r.error();
}

// True when some problem of the document (path "") says `words`, whatever the file.
bool says(const dpo::Problems& ps, const std::string& words) {
    for (const auto& p : ps)
        if (p.path.empty() && p.reason.find(words) != std::string::npos) return true;
    return false;
}
}  // namespace

TEST_CASE("a file nested deeper than a mapping needs is refused at the limit, in one pass") {
    // 100 KB of '[' once cost gigabytes and a minute: a pointer string per level.
    const std::string deep(100000, '[');
    auto ps = problems_of_text(deep);
    INFO(all(ps));
    REQUIRE(ps.size() == 1);
    CHECK(ps[0].reason.find("nested deeper than 32 levels") != std::string::npos);
    auto objects = problems_of_text(std::string(50000, '{') + "");
    CHECK_FALSE(objects.empty());
    // Objects nest the same way: {"a":{"a":...}}
    std::string nested;
    for (int i = 0; i < 40; ++i) nested += "{\"a\":";
    nested += "1" + std::string(40, '}');
    CHECK(has(problems_of_text(nested), std::string("/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a"),
              "nested deeper than 32 levels"));
    // 32 levels are read (and refused for what they hold, not for their depth).
    std::string ok_depth = std::string(31, '[') + std::string(31, ']');
    CHECK_FALSE(has(problems_of_text(R"({"x": )" + ok_depth + "}"), "", "nested deeper"));
}

TEST_CASE("a file larger than the limit is refused without being parsed") {
    const std::string big = "{\"uplink\": \"p0\", \"$schema\": \"" + std::string(dpo::kMaxMappingBytes, 'x') + "\"}";
    auto ps = problems_of_text(big);
    REQUIRE(ps.size() == 1);
    CHECK(ps[0].reason.find("larger than 4 MiB") != std::string::npos);
    TempDir d;
    CHECK(says(load_problems(d.write("big.json", big)), "larger than 4 MiB"));
}

TEST_CASE("only a regular file is read: a directory, a device, a pipe are refused for what they are") {
    TempDir d;
    CHECK(says(load_problems(d.path), "is a directory, not a mapping file"));
    CHECK(says(load_problems("/dev/zero"), "is a character device, not a mapping file"));
    const std::string fifo = d.path + "/fifo";
    REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
    // Nobody writes to it: opening it must not wait for a writer.
    CHECK(says(load_problems(fifo), "is a pipe, not a mapping file"));
}

TEST_CASE("bytes that are not text are shown escaped in problems, never raw") {
    // A key with an escape sequence in it (written \u001b in the JSON): unknown, and named.
    auto ps = problems_of_text(R"({"uplink": "p0", "\u001b[31mred": 1, "interfaces": []})");
    INFO(all(ps));
    bool escaped = false;
    for (const auto& p : ps) {
        CHECK(p.str().find('\x1b') == std::string::npos);
        escaped = escaped || p.str().find("\\x1b[31mred") != std::string::npos;
    }
    CHECK(escaped);
    // Bytes that are not UTF-8: a JSON error whose text quotes what it last read.
    auto bad = problems_of_text("{\"uplink\": \"p\xff\xc3\x28\"}");
    REQUIRE_FALSE(bad.empty());
    for (const auto& p : bad) {
        CHECK(p.str().find('\xff') == std::string::npos);
        CHECK(p.str().find('\xc3') == std::string::npos);
    }
}

TEST_CASE("many problems are told up to a limit, then counted in one line") {
    std::string text = "{\"uplink\": \"p0\", \"interfaces\": [{\"name\": \"a\", \"netdev\": \"p0.5\", \"role\": \"inner\", \"vlan\": 5}]";
    for (int i = 0; i < 1000; ++i) text += ", \"uplink\": \"p0\"";
    text += "}";
    auto ps = problems_of_text(text);
    CHECK(ps.size() == dpo::kMaxMappingProblems + 1);
    // 1000 duplicates and the missing "interfaces" check do not matter: 100 told, the rest counted
    CHECK(ps.back().reason.ends_with(" more problems: not shown"));
    CHECK(std::stoul(ps.back().reason) + dpo::kMaxMappingProblems >= 1000);
}

TEST_CASE("a 1 MiB mapping loads: every VLAN id in use, widely indented") {
    json d = spec();
    d.erase("nat");
    d.erase("aci");
    d.erase("evpn");
    d.erase("vxlan");
    d["interfaces"] = json::array();
    for (int vid = 1; vid <= 4094; ++vid)
        if (vid != 2)  // VLAN 2 is ACI's infra VLAN, refused on an interface
        d["interfaces"].push_back({{"name", "if" + std::to_string(vid)},
                                   {"netdev", "p0." + std::to_string(vid)},
                                   {"role", vid % 2 ? "inner" : "outer"},
                                   {"vlan", vid}});
    const std::string text = d.dump(40);
    REQUIRE(text.size() > (1u << 20));
    REQUIRE(text.size() < dpo::kMaxMappingBytes);
    auto r = dpo::parse_mapping(text, "m.json");
    INFO((r ? std::string() : all(r.error())));
    REQUIRE(r);
    CHECK(r->interfaces.size() == 4093);
}

TEST_CASE("nat.logging: collectors, template refresh and observation domain, with their defaults") {
    json s = spec();
    s["nat"]["logging"] = {{"collectors", {"192.0.2.10:4739", "[2001:db8::10]:4739"}}};
    auto q = dpo::parse_mapping(s.dump(), "m.json");
    REQUIRE(q.ok());
    REQUIRE(q->nat->logging);
    const auto& l = *q->nat->logging;
    REQUIRE(l.collectors.size() == 2);
    CHECK(l.collectors[0].str() == "192.0.2.10:4739");
    CHECK(l.collectors[0].address.family == dpo::Family::V4);
    CHECK(l.collectors[1].str() == "[2001:db8::10]:4739");
    CHECK(l.collectors[1].address.family == dpo::Family::V6);
    CHECK(l.collectors[1].port == 4739);
    CHECK(l.template_refresh_seconds == 60);
    CHECK(l.observation_domain_id == 1);

    s["nat"]["logging"]["template_refresh_seconds"] = 3600;
    s["nat"]["logging"]["observation_domain_id"] = 4294967295u;
    auto r = dpo::parse_mapping(s.dump(), "m.json");
    REQUIRE(r.ok());
    CHECK(r->nat->logging->template_refresh_seconds == 3600);
    CHECK(r->nat->logging->observation_domain_id == 4294967295u);

    s["nat"].erase("logging");
    auto without = dpo::parse_mapping(s.dump(), "m.json");
    REQUIRE(without.ok());
    CHECK_FALSE(without->nat->logging);
}

TEST_CASE("nat.logging: each bad value is refused where it is, saying why") {
    const std::string at = "/nat/logging";
    auto refused = [&](json logging, const std::string& path, const std::string& words) {
        json s = spec();
        s["nat"]["logging"] = std::move(logging);
        auto ps = problems_of(s);
        INFO(all(ps));
        CHECK(has(ps, path, words));
    };
    refused(json::object(), at, "missing required key 'collectors'");
    refused({{"collectors", json::array()}}, at + "/collectors", "must hold 1..8 collectors, not 0");
    json nine = json::array();
    for (int i = 1; i <= 9; ++i) nine.push_back("192.0.2." + std::to_string(i) + ":4739");
    refused({{"collectors", nine}}, at + "/collectors", "not 9");
    refused({{"collectors", "192.0.2.10:4739"}}, at + "/collectors", "must be an array");
    for (const char* bad : {"192.0.2.10", "192.0.2.10:0", "192.0.2.10:65536", "192.0.2.10:", "2001:db8::10:4739",
                            "[192.0.2.10]:4739", "[2001:db8::10]", "[2001:db8::10]4739", "collector:4739", ":4739",
                            "192.0.2.10:47a9", "192.0.2.10:+4739"})
        refused({{"collectors", {bad}}}, at + "/collectors/0", "is not a collector like");
    refused({{"collectors", {42}}}, at + "/collectors/0", "must be a string");
    refused({{"collectors", {"192.0.2.10:4739", "192.0.2.11:4739", "192.0.2.10:4739"}}}, at + "/collectors/2",
            "is listed twice");
    for (int bad : {0, 3601})
        refused({{"collectors", {"192.0.2.10:4739"}}, {"template_refresh_seconds", bad}},
                at + "/template_refresh_seconds", "must be 1..3600");
    refused({{"collectors", {"192.0.2.10:4739"}}, {"observation_domain_id", 4294967296ull}},
            at + "/observation_domain_id", "must be 0..4294967295");
    refused({{"collectors", {"192.0.2.10:4739"}}, {"format", "nel"}}, at + "/format", "unknown key 'format'");
}

TEST_CASE("a change to nat.logging alone does not restart the NAT stage") {
    json s = spec();
    auto a = dpo::parse_mapping(s.dump(), "m.json");
    s["nat"]["logging"] = {{"collectors", {"192.0.2.10:4739"}}};
    auto b = dpo::parse_mapping(s.dump(), "m.json");
    s["nat"]["chunk_idle_seconds"] = 30;
    auto c = dpo::parse_mapping(s.dump(), "m.json");
    REQUIRE((a.ok() && b.ok() && c.ok()));
    CHECK(dpo::same_nat_stage(a->nat, b->nat));
    CHECK_FALSE(a->nat == b->nat);
    CHECK_FALSE(dpo::same_nat_stage(b->nat, c->nat));
    CHECK_FALSE(dpo::same_nat_stage(a->nat, std::nullopt));
    CHECK(dpo::same_nat_stage(std::nullopt, std::nullopt));
}
