// SPDX-License-Identifier: GPL-2.0-or-later
// The pure half of the start-up kernel feature probe: what a mapping needs, what an
// answer of the kernel means, and what the daemon does about a missing feature.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <string>

#include "core/features.hpp"
#include "core/mapping_loader.hpp"

using dpo::features::Answer;
using dpo::features::Feature;
using dpo::features::Finding;

namespace {

constexpr const char* kVlan = R"({"uplink": "p0", "interfaces": [
    {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
    {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}]})";
constexpr const char* kVlanNat = R"({"uplink": "p0", "interfaces": [
    {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
    {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}],
    "nat": {"zone": 3, "pool": ["198.51.100.0/28"]}})";
constexpr const char* kMixed = R"({"uplink": "p0",
    "vxlan": {"device": "vxlan0", "port": 4789},
    "aci": {"vlan": 2, "local_vtep": "10.0.2.1"},
    "evpn": {"local_vtep": "10.0.1.1"},
    "interfaces": [
    {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
    {"name": "green", "netdev": "svi-green", "role": "inner", "evpn": {"vni": 5001, "remote_vtep": "10.0.1.2"}},
    {"name": "web", "netdev": "svi-web", "role": "inner", "aci": {"vni": 6001, "remote_vtep": "10.0.2.10"}},
    {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}],
    "nat": {"zone": 1, "pool": ["198.51.100.0/28"]}})";

Finding found(Feature f, Answer a, int error = 0, const std::string& extack = "") { return {f, a, error, extack}; }

dpo::Mapping mapping(const char* text) {
    auto r = dpo::parse_mapping(text, "m.json");
    REQUIRE(r.ok());
    return *r;
}

std::vector<std::string> modules(const std::vector<Feature>& fs) {
    std::vector<std::string> out;
    for (Feature f : fs) out.emplace_back(dpo::features::spec(f).module);
    return out;
}

const std::vector<std::string> kCore = {"sch_ingress", "cls_flower", "act_gact", "act_mirred",
                                        "act_pedit",   "act_csum",   "act_vlan"};

std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

}  // namespace

TEST_CASE("features: every spec is its own row, named by the module that provides it") {
    for (Feature f : dpo::features::all()) {
        const auto& s = dpo::features::spec(f);
        CHECK(s.feature == f);
        CHECK(std::string(s.module).size() > 0);
    }
    CHECK(std::string(dpo::features::spec(Feature::TunnelKey).module) == "act_tunnel_key");
    CHECK(std::string(dpo::features::spec(Feature::Clsact).module) == "sch_ingress");  // clsact lives in sch_ingress
    CHECK(std::string(dpo::features::spec(Feature::Ctnetlink).module) == "nf_conntrack_netlink");
}

TEST_CASE("features: a mapping needs the core, and a stage's features only with that stage") {
    CHECK(modules(dpo::features::needed(mapping(kVlan))) == kCore);
    CHECK(modules(dpo::features::needed(mapping(kVlanNat))) == plus(kCore, {"act_ct", "act_police", "nf_conntrack_netlink"}));
    CHECK(modules(dpo::features::needed(mapping(kMixed))) ==
          plus(kCore, {"act_ct", "act_tunnel_key", "act_police", "nf_conntrack_netlink"}));
}

TEST_CASE("features: the kernel's answer to a probe, read as a value") {
    // tc: a kind the kernel cannot load (or lacks support for) is missing ...
    CHECK(dpo::features::classify(Feature::TunnelKey, ENOENT) == Answer::Missing);
    CHECK(dpo::features::classify(Feature::Flower, ENOENT) == Answer::Missing);
    CHECK(dpo::features::classify(Feature::Ct, EOPNOTSUPP) == Answer::Missing);  // act_ct without NAT built in
    CHECK(dpo::features::classify(Feature::Gact, 0) == Answer::Present);
    // ... anything else says nothing about the module: no permission, a device gone.
    CHECK(dpo::features::classify(Feature::Gact, EPERM) == Answer::Unknown);
    CHECK(dpo::features::classify(Feature::Mirred, ENODEV) == Answer::Unknown);
    CHECK(dpo::features::classify(Feature::Clsact, EINVAL) == Answer::Unknown);
    // ctnetlink: nfnetlink answers EINVAL for a subsystem it cannot load.
    CHECK(dpo::features::classify(Feature::Ctnetlink, EINVAL) == Answer::Missing);
    CHECK(dpo::features::classify(Feature::Ctnetlink, EPROTONOSUPPORT) == Answer::Missing);
    CHECK(dpo::features::classify(Feature::Ctnetlink, EPERM) == Answer::Unknown);
    CHECK(dpo::features::classify(Feature::Ctnetlink, ENOENT) == Answer::Unknown);
}

TEST_CASE("features: a missing core feature refuses the start, a stage's degrades that stage") {
    auto v = dpo::features::decide({found(Feature::Flower, Answer::Present), found(Feature::Gact, Answer::Present)});
    CHECK(!v.refuse);
    CHECK(v.nat);
    CHECK(v.vxlan);
    CHECK(v.missing.empty());

    v = dpo::features::decide({found(Feature::Flower, Answer::Missing, ENOENT, "TC classifier not found")});
    CHECK(v.refuse);
    CHECK(v.missing == std::vector<Feature>{Feature::Flower});

    v = dpo::features::decide({found(Feature::Ct, Answer::Missing), found(Feature::Gact, Answer::Present)});
    CHECK(!v.refuse);
    CHECK(!v.nat);
    CHECK(v.vxlan);

    v = dpo::features::decide({found(Feature::Ctnetlink, Answer::Missing)});
    CHECK(!v.nat);

    v = dpo::features::decide({found(Feature::TunnelKey, Answer::Missing)});
    CHECK(!v.refuse);
    CHECK(v.nat);
    CHECK(!v.vxlan);

    // An unknown answer is logged, not acted on.
    v = dpo::features::decide({found(Feature::Gact, Answer::Unknown, EPERM), found(Feature::Ct, Answer::Unknown, EPERM)});
    CHECK(!v.refuse);
    CHECK(v.nat);
    CHECK(v.missing.empty());

    CHECK(dpo::features::effect(Feature::TunnelKey) == "EVPN and ACI interfaces left to the kernel");
    CHECK(dpo::features::effect(Feature::Ct).find("left to the kernel") != std::string::npos);
    CHECK(dpo::features::effect(Feature::Mirred).find("not starting") != std::string::npos);
}

TEST_CASE("features: without the VXLAN stage the engine gets no EVPN or ACI interface, the rest unchanged") {
    const auto m = mapping(kMixed);
    const auto same = dpo::features::admit(m, dpo::features::Verdict{});
    CHECK(same.interfaces.size() == 4);

    dpo::features::Verdict no_vxlan;
    no_vxlan.vxlan = false;
    const auto a = dpo::features::admit(m, no_vxlan);
    REQUIRE(a.interfaces.size() == 2);
    CHECK(a.interfaces[0].name == "blue");
    CHECK(a.interfaces[1].name == "transit");
    CHECK(a.nat == m.nat);  // NAT is the NAT stage's business (it runs from VLAN interfaces)
    CHECK(a.uplink == m.uplink);
    // The stage's features are not needed any more by what is left.
    const auto left = dpo::features::needed(a);
    CHECK(std::find(left.begin(), left.end(), Feature::TunnelKey) == left.end());
}
