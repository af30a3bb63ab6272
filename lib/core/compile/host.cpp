// SPDX-License-Identifier: GPL-2.0-or-later
// The fixed rules of each routing chain (what a router never forwards goes to the
// kernel) and the host's own addresses.
#include <array>

#include "parts.hpp"

namespace dpo::compile {

namespace {

void to_kernel(tc::Rule r, KeyOutput& out) {
    r.actions = {tc::Pass{}};
    out.rules.push_back(std::move(r));
}

// Destinations the kernel never forwards: multicast, broadcast, link-local, loopback,
// "this network".
constexpr std::array kSpecialDestinations = {"224.0.0.0/4", "255.255.255.255/32", "169.254.0.0/16", "127.0.0.0/8",
                                             "0.0.0.0/8",   "ff00::/8",           "fe80::/10",      "::1/128",
                                             "::/128"};
// Sources the kernel drops as martians: it must see them, and decide.
constexpr std::array kMartianSources = {"127.0.0.0/8", "0.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32",
                                        "fe80::/10",   "ff00::/8",  "::1/128",     "::/128"};

}  // namespace

void compile_pipeline(const PipelineKey& k, View& v, KeyOutput& out) {
    const IngressDevice* d = v.facts().device(k.dev);
    if (!d) return;
    const nat::NatView* nat = v.nat();
    for (Role role : roles_of(*d)) {
        const std::uint32_t chain = process_chain(role);
        // TTL / hop limit 0 or 1: the kernel answers with ICMP time exceeded.
        for (Family f : {Family::V4, Family::V6}) {
            auto r = chain_rule(*d, chain, f == Family::V4 ? kPrioTtlV4 : kPrioTtlV6, f,
                                "ttl <= 1: the kernel answers time exceeded");
            r.match.ip_ttl = tc::Masked<std::uint8_t>{0, 0xfe};
            to_kernel(std::move(r), out);
        }
        for (const char* text : kSpecialDestinations) {
            const IpPrefix p = *IpPrefix::parse(text);
            const bool v4 = p.address.family == Family::V4;
            auto r = chain_rule(*d, chain, v4 ? kPrioHostV4 : kPrioHostV6, p.address.family,
                                "not forwarded: special destination");
            r.match.dst_ip = p;
            to_kernel(std::move(r), out);
        }
        for (const char* text : kMartianSources) {
            const IpPrefix p = *IpPrefix::parse(text);
            const bool v4 = p.address.family == Family::V4;
            auto r = chain_rule(*d, chain, v4 ? kPrioMartianSrcV4 : kPrioMartianSrcV6, p.address.family,
                                "not forwarded: martian source");
            r.match.src_ip = p;
            to_kernel(std::move(r), out);
        }
        // NAT first on the outer side: replies are translated back, then routed in the
        // tracked chain; what is not a reply (new, invalid) is dropped there.
        if (nat && role == Role::Outer) nat_outer_lookup(*d, v.mapping().nat->zone, out);
    }
    if (nat && d->inner && v.mapping().nat) nat_punt_rule(*d, *nat, *v.mapping().nat, out);
}

void compile_local_address(const LocalAddressKey& k, View& v, KeyOutput& out) {
    const IpAddress& a = k.address;
    if (!v.local(a) || never_routed(a) || is_loopback(a)) return;
    const bool v4 = a.family == Family::V4;
    for (const auto& d : v.facts().ingress) {
        if (!d) continue;
        for (Role role : roles_of(*d)) {
            auto r = chain_rule(*d, process_chain(role), v4 ? kPrioHostV4 : kPrioHostV6, a.family, "to the host itself");
            r.match.dst_ip = host_prefix(a);
            to_kernel(std::move(r), out);
        }
    }
}

}  // namespace dpo::compile
