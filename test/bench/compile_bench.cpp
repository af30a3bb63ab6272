// SPDX-License-Identifier: GPL-2.0-or-later
// How the pure core scales with the routing table: compile and plan times, and the
// memory a route costs, for tables of 1k to 100k routes. Numbers, not pass/fail:
// `meson test -C build --benchmark` or `build/test/compile-bench`.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>

#include "core/compile/compiler.hpp"
#include "core/mapping_loader.hpp"
#include "core/reconcile/plan.hpp"

using namespace dpo;

namespace {

long max_rss_kib() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

KernelState hypervisor(std::size_t routes, std::size_t neighbours) {
    KernelState k;
    // ifindex 2..6; with the EVPN mapping, p0.101 stands for an SVI and vxlan0 is the
    // metadata-mode device (the compiler reads neither's kind beyond "vxlan").
    const char* names[] = {"p0", "p0.100", "p0.101", "p0.200", "vxlan0"};
    for (int i = 0; i < 5; ++i) {
        Link& l = k.links[i + 2];
        l.ifindex = i + 2;
        l.name = names[i];
        l.kind = i == 4 ? "vxlan" : "";
        l.up = true;
        l.mac = Mac{2, 0, 0, 0, 0, static_cast<std::uint8_t>(i)};
    }
    k.addresses.push_back({2, IpPrefix{IpAddress::v4(0x0a000101u), 24}});  // the local VTEP 10.0.1.1
    Route underlay;  // toward the remote VTEP
    underlay.table = 254;
    underlay.type = 1;
    underlay.destination = IpPrefix{IpAddress::v4(0x0a000100u), 24};
    underlay.nexthops = {{std::nullopt, 2}};
    k.routes.push_back(underlay);
    for (int i = 3; i <= 5; ++i) {
        Route c;
        c.table = 254;
        c.type = 1;
        c.destination = IpPrefix{IpAddress::v4(0x0a000000u | (static_cast<std::uint32_t>(i) << 16)), 16};
        c.nexthops = {{std::nullopt, i}};
        k.routes.push_back(c);
        Neighbour gw;
        gw.ifindex = i;
        gw.address = IpAddress::v4(0x0a000001u | (static_cast<std::uint32_t>(i) << 16));
        gw.mac = Mac{2, 1, 0, 0, 0, static_cast<std::uint8_t>(i)};
        gw.state = NeighbourState::Resolved;
        k.neighbours.push_back(gw);
    }
    for (std::size_t n = 0; n < neighbours; ++n) {
        Neighbour h;
        h.ifindex = 3 + static_cast<int>(n % 3);
        h.address = IpAddress::v4(0x0a000000u | (static_cast<std::uint32_t>(h.ifindex) << 16) | (2 + static_cast<std::uint32_t>(n / 3)));
        h.mac = Mac{2, 2, 0, static_cast<std::uint8_t>(n >> 16), static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n)};
        h.state = NeighbourState::Resolved;
        k.neighbours.push_back(h);
    }
    for (std::size_t r = 0; r < routes; ++r) {
        Route x;
        x.table = 254;
        x.type = 1;
        x.destination = IpPrefix{IpAddress::v4(0x64000000u + (static_cast<std::uint32_t>(r) << 8)), 24};
        const int dev = 3 + static_cast<int>(r % 3);
        x.nexthops = {{IpAddress::v4(0x0a000001u | (static_cast<std::uint32_t>(dev) << 16)), dev}};
        k.routes.push_back(x);
    }
    return k;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main() {
    auto vlan = parse_mapping(R"({"uplink": "p0", "interfaces": [
        {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
        {"name": "red", "netdev": "p0.101", "role": "inner", "vlan": 101},
        {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}]})",
                              "bench");
    // A third of the routes leave encapsulated, and an EVPN ingress adds a second set
    // of routing chains on the VXLAN device.
    auto evpn = parse_mapping(R"({"uplink": "p0", "vxlan": {"device": "vxlan0"},
        "evpn": {"local_vtep": "10.0.1.1"}, "interfaces": [
        {"name": "blue", "netdev": "p0.100", "role": "inner", "vlan": 100},
        {"name": "red", "netdev": "p0.101", "role": "inner", "evpn": {"vni": 5001, "remote_vtep": "10.0.1.2"}},
        {"name": "transit", "netdev": "p0.200", "role": "outer", "vlan": 200}]})",
                              "bench");
    if (!vlan || !evpn) return 1;
    std::printf("sizeof: Route %zu B (+%zu B per nexthop), Neighbour %zu B, tc::Rule %zu B\n", sizeof(Route),
                sizeof(Nexthop), sizeof(Neighbour), sizeof(tc::Rule));
    std::printf("%-10s %8s %8s %8s %12s %10s %12s\n", "mapping", "routes", "neigh", "rules", "compile ms", "plan ms",
                "max rss MiB");
    for (const auto& [name, m] : {std::pair{"vlan", &*vlan}, std::pair{"vlan+evpn", &*evpn}}) {
        for (std::size_t routes : {1000u, 10000u, 100000u}) {
            const std::size_t neighbours = routes / 10;
            const KernelState k = hypervisor(routes, neighbours);
            auto t0 = std::chrono::steady_clock::now();
            const auto program = compile::compile(*m, k);
            const double compile_ms = ms_since(t0);
            std::vector<tc::Installed> installed;
            installed.reserve(program.rules.size());
            for (const auto& r : program.rules) installed.push_back({r, 1, true, true, false, true, 0});
            t0 = std::chrono::steady_clock::now();
            const auto plan = reconcile::plan(program.rules, installed);
            const double plan_ms = ms_since(t0);
            std::printf("%-10s %8zu %8zu %8zu %12.1f %10.1f %12.1f%s\n", name, routes, neighbours, program.rules.size(), compile_ms,
                        plan_ms, static_cast<double>(max_rss_kib()) / 1024.0, plan.empty() ? "" : "  (plan not empty!)");
        }
    }
    return 0;
}
