// SPDX-License-Identifier: GPL-2.0-or-later
#include <catch2/catch.hpp>

#include "core/compile/inventory.hpp"
#include "core/mapping_loader.hpp"

namespace {

dpo::Mapping two_vlans() {
    auto r = dpo::parse_mapping(R"({"uplink": "p0", "interfaces": [
        {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
        {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}]})",
                                "m.json");
    REQUIRE(r.ok());
    return *r;
}

dpo::Link vlan_link(int ifindex, const char* name, int parent, std::uint16_t vid) {
    dpo::Link l;
    l.ifindex = ifindex;
    l.name = name;
    l.kind = "vlan";
    l.up = true;
    l.parent_ifindex = parent;
    l.vlan_id = vid;
    return l;
}

dpo::KernelState with_uplink() {
    dpo::KernelState k;
    dpo::Link& uplink = k.links[2];
    uplink.ifindex = 2;
    uplink.name = "p0";
    uplink.up = true;
    return k;
}

bool finding(const std::vector<dpo::Finding>& fs, bool ok, const std::string& words) {
    for (const auto& f : fs)
        if (f.ok == ok && f.text.find(words) != std::string::npos) return true;
    return false;
}

}  // namespace

TEST_CASE("the kernel view matches interfaces to their netdevs and what lies on them") {
    dpo::KernelState k = with_uplink();
    k.links[3] = vlan_link(3, "p0.100", 2, 100);
    k.addresses.push_back({3, *dpo::IpPrefix::parse("10.100.0.1/24")});
    k.routes.push_back({*dpo::IpPrefix::parse("10.100.0.0/24"), 254, 0, 1, 2, 0, {{std::nullopt, 3}}});
    k.routes.push_back({*dpo::IpPrefix::parse("10.9.0.0/16"), 100, 0, 1, 2, 0, {{std::nullopt, 3}}});  // other table
    dpo::Neighbour n;
    n.ifindex = 3;
    n.address = *dpo::IpAddress::parse("10.100.0.2");
    n.mac = dpo::Mac{2, 0, 0, 0, 1, 2};
    n.state = dpo::NeighbourState::Resolved;
    k.neighbours.push_back(n);

    auto fs = dpo::inspect_kernel(two_vlans(), k);
    CHECK(finding(fs, true, "uplink p0: ifindex 2"));
    CHECK(finding(fs, true, "interface blue (p0.100): ifindex 3"));
    CHECK(finding(fs, true, "address 10.100.0.1/24"));
    CHECK(finding(fs, true, "route 10.100.0.0/24 dev p0.100"));
    CHECK_FALSE(finding(fs, true, "10.9.0.0/16"));
    CHECK(finding(fs, true, "neighbour 10.100.0.2 lladdr 02:00:00:00:01:02 resolved"));
    CHECK(finding(fs, false, "interface transit (p0.200): no such netdev"));
}

TEST_CASE("a VLAN netdev of the wrong id or on the wrong lower device is flagged") {
    dpo::KernelState k = with_uplink();
    k.links[3] = vlan_link(3, "p0.100", 2, 101);
    k.links[4] = vlan_link(4, "p0.200", 9, 200);
    auto fs = dpo::inspect_kernel(two_vlans(), k);
    CHECK(finding(fs, false, "p0.100): ifindex 3 mac 00:00:00:00:00:00 up, but it is VLAN 101, not 100"));
    CHECK(finding(fs, false, "its lower device is #9, not the uplink"));
}

TEST_CASE("the VXLAN side: a metadata-mode device and local VTEPs the host owns") {
    auto m = dpo::parse_mapping(R"({"uplink": "p0", "vxlan": {"device": "vxlan0"},
        "evpn": {"local_vtep": "10.0.1.1"}, "aci": {"local_vtep": "10.0.2.1"},
        "interfaces": [{"name": "green", "netdev": "svi-green", "role": "inner",
                        "evpn": {"vni": 5001, "remote_vtep": "10.0.1.2"}}]})",
                                "m.json");
    REQUIRE(m.ok());
    dpo::KernelState k = with_uplink();
    dpo::Link& vx = k.links[5];
    vx.ifindex = 5;
    vx.name = "vxlan0";
    vx.kind = "vxlan";
    vx.up = true;
    k.addresses.push_back({2, *dpo::IpPrefix::parse("10.0.1.1/24")});
    auto fs = dpo::inspect_kernel(*m, k);
    CHECK(finding(fs, true, "vxlan device vxlan0: kind vxlan (metadata mode) up"));
    CHECK(finding(fs, true, "evpn local vtep 10.0.1.1: on p0"));
    CHECK(finding(fs, false, "aci local vtep 10.0.2.1: not an address of this host"));
    vx.vxlan_id = 5001;
    fs = dpo::inspect_kernel(*m, k);
    CHECK(finding(fs, false, "vxlan device vxlan0: kind vxlan vni 5001, but the fast path needs a metadata-mode"));
}
