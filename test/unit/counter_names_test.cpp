// SPDX-License-Identifier: GPL-2.0-or-later
#include <catch2/catch.hpp>

#include "core/compile/counter_names.hpp"
#include "core/compile/pipeline.hpp"
#include "core/mapping_loader.hpp"

namespace {

using dpo::compile::CounterKind;
using dpo::compile::counter_name;

dpo::Mapping mapping() {
    auto r = dpo::parse_mapping(R"({"uplink": "p0", "vxlan": {"device": "vxlan0"},
        "evpn": {"local_vtep": "10.0.1.1"}, "aci": {"local_vtep": "10.0.2.1"},
        "interfaces": [
        {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
        {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200},
        {"name": "green", "netdev": "svi-green", "role": "inner", "evpn": {"vni": 5001, "remote_vtep": "10.0.1.2"}},
        {"name": "web", "netdev": "svi-web", "role": "inner", "aci": {"vni": 6001, "remote_vtep": "10.0.2.10"}}]})",
                                "m.json");
    INFO((r.ok() ? std::string() : r.error().front().str()));
    REQUIRE(r.ok());
    return *r;
}

}  // namespace

TEST_CASE("drop reasons are named by their shared gact's index") {
    const auto m = mapping();
    CHECK(counter_name(m, dpo::compile::kDropOuterNew)->name == "outer-new");
    CHECK(counter_name(m, dpo::compile::kDropInvalid)->name == "invalid");
    CHECK(counter_name(m, dpo::compile::kDropChunkLimit)->name == "chunk-limit");
    CHECK(counter_name(m, dpo::compile::kDropNoPunt)->name == "no-punt");
    CHECK(counter_name(m, dpo::compile::kDropPoolEmpty)->name == "pool-empty");
    CHECK(counter_name(m, dpo::compile::kDropPoolEmpty)->kind == CounterKind::Drop);
    CHECK(std::string(to_string(CounterKind::Drop)) == "drop");
}

TEST_CASE("an egress mirred is named by the interface its VLAN or VNI stands for, with the device it leaves by") {
    const auto m = mapping();
    const auto blue = counter_name(m, dpo::compile::kEgressCounterVlanBase + 100);
    REQUIRE(blue);
    CHECK(blue->kind == CounterKind::Egress);
    CHECK(blue->name == "blue");
    CHECK(blue->device == "p0");
    CHECK(blue->detail == "vlan 100");
    const auto green = counter_name(m, dpo::compile::kEgressCounterVxlanBase + 5001);
    REQUIRE(green);
    CHECK(green->name == "green");
    CHECK(green->device == "vxlan0");
    CHECK(green->detail == "evpn vni 5001");
    CHECK(counter_name(m, dpo::compile::kEgressCounterVxlanBase + 6001)->detail == "aci vni 6001");
    CHECK(counter_name(m, dpo::compile::kPuntIndex)->name == "nat-punt");
    CHECK(counter_name(m, dpo::compile::kReinjectVxlanIndex)->device == "vxlan0");
}

TEST_CASE("an index no interface has any more still says what it is; one of no counter range is none") {
    const auto m = mapping();
    CHECK(counter_name(m, dpo::compile::kEgressCounterVlanBase + 300)->name == "vlan-300");
    CHECK(counter_name(m, dpo::compile::kEgressCounterVxlanBase + 9)->name == "vni-9");
    CHECK(!counter_name(m, 1));
    CHECK(!counter_name(m, 0xd9300006));
    CHECK(!counter_name(m, dpo::compile::kEgressCounterVlanBase + 4096));
}

TEST_CASE("counter_names lists the fixed ones and one egress per mapped VLAN or VNI, by index") {
    const auto names = dpo::compile::counter_names(mapping());
    CHECK(names.size() == 8 + 4);
    for (std::size_t i = 1; i < names.size(); ++i) CHECK(names[i - 1].index < names[i].index);
    for (const auto& n : names) CHECK(counter_name(mapping(), n.index) == n);
}
