// SPDX-License-Identifier: GPL-2.0-or-later
#include "rtnl_snapshot.hpp"

#include <linux/if.h>
#include <linux/neighbour.h>
#include <netlink/cache.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/vlan.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <sys/socket.h>

#include <cstring>
#include <string_view>
#include <memory>

namespace dpo::kernel {

namespace {

struct SockFree {
    void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct CacheFree {
    void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using Sock = std::unique_ptr<nl_sock, SockFree>;
using Cache = std::unique_ptr<nl_cache, CacheFree>;

std::optional<IpAddress> to_ip(nl_addr* a) {
    if (!a) return std::nullopt;
    const int fam = nl_addr_get_family(a);
    const unsigned len = nl_addr_get_len(a);
    if (fam == AF_INET && len == 4) return IpAddress::from_bytes(Family::V4, nl_addr_get_binary_addr(a));
    if (fam == AF_INET6 && len == 16) return IpAddress::from_bytes(Family::V6, nl_addr_get_binary_addr(a));
    return std::nullopt;
}

std::optional<Mac> to_mac(nl_addr* a) {
    if (!a || nl_addr_get_len(a) != 6) return std::nullopt;
    Mac m;
    std::memcpy(m.data(), nl_addr_get_binary_addr(a), 6);
    return m;
}

template <class Fn>
void for_each(nl_cache* cache, Fn fn) {
    for (nl_object* o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) fn(o);
}

Link to_link(rtnl_link* l) {
    Link out;
    out.ifindex = rtnl_link_get_ifindex(l);
    if (const char* n = rtnl_link_get_name(l)) out.name = n;
    if (const char* t = rtnl_link_get_type(l)) out.kind = t;
    if (auto mac = to_mac(rtnl_link_get_addr(l))) out.mac = *mac;
    out.mtu = rtnl_link_get_mtu(l);
    const unsigned flags = rtnl_link_get_flags(l);
    out.up = flags & IFF_UP;
    out.running = flags & IFF_RUNNING;
    out.parent_ifindex = rtnl_link_get_link(l);
    if (rtnl_link_is_vlan(l)) out.vlan_id = static_cast<std::uint16_t>(rtnl_link_vlan_get_id(l));
    if (rtnl_link_is_vxlan(l)) {
        uint32_t id = 0;
        // A metadata ("external") device has no VNI of its own (the kernel reports 0).
        const bool metadata = rtnl_link_vxlan_get_collect_metadata(l) > 0;
        if (!metadata && rtnl_link_vxlan_get_id(l, &id) == 0) out.vxlan_id = id;
        uint32_t port = 0;  // host order (libnl converts)
        if (rtnl_link_vxlan_get_port(l, &port) == 0) out.vxlan_port = static_cast<std::uint16_t>(port);
    }
    return out;
}

constexpr unsigned kResolvedNud = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;

}  // namespace

namespace {

std::optional<Link> link_of(rtnl_link* link) {
    // The cache keys links by (ifindex, family): a bridge port's AF_BRIDGE object (sent
    // on every port change) sits beside the device's own, without its kind or VXLAN
    // data. Only the device's own object says what it is.
    if (rtnl_link_get_family(link) != AF_UNSPEC) return std::nullopt;
    return to_link(link);
}

std::optional<Address> address_of(rtnl_addr* a) {
    auto ip = to_ip(rtnl_addr_get_local(a));
    if (!ip) return std::nullopt;
    return Address{rtnl_addr_get_ifindex(a), IpPrefix{*ip, static_cast<std::uint8_t>(rtnl_addr_get_prefixlen(a))}};
}

std::optional<Route> route_of(rtnl_route* r) {
    nl_addr* dst = rtnl_route_get_dst(r);
    const int fam = rtnl_route_get_family(r);
    if (fam != AF_INET && fam != AF_INET6) return std::nullopt;
    Route out;
    // A default route has a zero-length dst that libnl may report without bytes.
    out.destination.address.family = fam == AF_INET ? Family::V4 : Family::V6;
    if (auto ip = to_ip(dst)) out.destination.address = *ip;
    out.destination.length = dst ? static_cast<std::uint8_t>(nl_addr_get_prefixlen(dst)) : 0;
    out.table = rtnl_route_get_table(r);
    out.priority = rtnl_route_get_priority(r);
    out.type = rtnl_route_get_type(r);
    out.protocol = rtnl_route_get_protocol(r);
    out.tos = rtnl_route_get_tos(r);
    const int n = rtnl_route_get_nnexthops(r);
    for (int i = 0; i < n; ++i) {
        rtnl_nexthop* nh = rtnl_route_nexthop_n(r, i);
        out.nexthops.push_back({to_ip(rtnl_route_nh_get_gateway(nh)), rtnl_route_nh_get_ifindex(nh)});
    }
    return out;
}

std::optional<Neighbour> neighbour_of(rtnl_neigh* n) {
    // Bridge and VXLAN FDB entries (AF_BRIDGE) carry a VTEP as their "dst": not neighbours.
    const int fam = rtnl_neigh_get_family(n);
    if (fam != AF_INET && fam != AF_INET6) return std::nullopt;
    auto ip = to_ip(rtnl_neigh_get_dst(n));
    if (!ip) return std::nullopt;
    Neighbour out;
    out.ifindex = rtnl_neigh_get_ifindex(n);
    out.address = *ip;
    out.mac = to_mac(rtnl_neigh_get_lladdr(n));
    const int state = rtnl_neigh_get_state(n);
    out.nud = static_cast<std::uint16_t>(state < 0 ? 0 : state);
    out.state = (out.nud & kResolvedNud) && out.mac ? NeighbourState::Resolved : NeighbourState::Unresolved;
    return out;
}

}  // namespace

KernelState state_from_caches(nl_cache* links, nl_cache* addrs, const RouteStore& routes, nl_cache* neigh) {
    KernelState k;
    for_each(links, [&](nl_object* o) {
        if (auto l = link_of(reinterpret_cast<rtnl_link*>(o))) k.links[l->ifindex] = std::move(*l);
    });
    for_each(addrs, [&](nl_object* o) {
        if (auto a = address_of(reinterpret_cast<rtnl_addr*>(o))) k.addresses.push_back(*a);
    });
    k.routes.reserve(routes.size());
    routes.for_each([&](nl_object* o) {
        if (auto r = route_of(reinterpret_cast<rtnl_route*>(o))) k.routes.push_back(std::move(*r));
    });
    for_each(neigh, [&](nl_object* o) {
        if (auto n = neighbour_of(reinterpret_cast<rtnl_neigh*>(o))) k.neighbours.push_back(std::move(*n));
    });
    return k;
}

std::optional<model::Event> event_of(nl_object* o, bool removed) {
    const std::string_view type = nl_object_get_type(o);
    if (type == "route/link") {
        auto* l = reinterpret_cast<rtnl_link*>(o);
        if (rtnl_link_get_family(l) != AF_UNSPEC) return std::nullopt;
        const int ifindex = rtnl_link_get_ifindex(l);
        if (removed) return model::LinkEvent{ifindex, std::nullopt};
        return model::LinkEvent{ifindex, link_of(l)};
    }
    if (type == "route/addr") {
        if (auto a = address_of(reinterpret_cast<rtnl_addr*>(o))) return model::AddressEvent{*a, removed};
        return std::nullopt;
    }
    if (type == "route/route") {
        if (auto r = route_of(reinterpret_cast<rtnl_route*>(o))) return model::RouteEvent{std::move(*r), removed};
        return std::nullopt;
    }
    if (type == "route/neigh") {
        if (auto n = neighbour_of(reinterpret_cast<rtnl_neigh*>(o))) return model::NeighbourEvent{std::move(*n), removed};
        return std::nullopt;
    }
    return std::nullopt;
}

Result<KernelState> read_kernel_state() {
    Sock sock(nl_socket_alloc());
    if (!sock) return fail(std::string("cannot allocate a netlink socket"));
    if (int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0)
        return fail(std::string("cannot connect to rtnetlink: ") + nl_geterror(err));
    nl_cache* raw = nullptr;
    if (int err = rtnl_link_alloc_cache(sock.get(), AF_UNSPEC, &raw); err < 0)
        return fail(std::string("cannot dump links: ") + nl_geterror(err));
    Cache links(raw);
    if (int err = rtnl_addr_alloc_cache(sock.get(), &raw); err < 0)
        return fail(std::string("cannot dump addresses: ") + nl_geterror(err));
    Cache addrs(raw);
    RouteStore routes;
    if (auto dumped = routes.dump(sock.get()); !dumped) return fail("cannot dump routes: " + dumped.error());
    if (int err = rtnl_neigh_alloc_cache(sock.get(), &raw); err < 0)
        return fail(std::string("cannot dump neighbours: ") + nl_geterror(err));
    Cache neigh(raw);
    return state_from_caches(links.get(), addrs.get(), routes, neigh.get());
}

}  // namespace dpo::kernel
