// SPDX-License-Identifier: GPL-2.0-or-later
#include "route_store.hpp"

#include <linux/rtnetlink.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/object.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/route/rtnl.h>
#include <sys/socket.h>

#include <string>

#include "core/malformed.hpp"
#include "rtnl_snapshot.hpp"

namespace dpo::kernel {

namespace {
// libnl's keygen reduces its hash modulo the table size it is given: the whole 32 bits.
constexpr std::uint32_t kWholeHash = 0xffffffffu;

std::uint32_t identity_hash(nl_object* o) {
    std::uint32_t h = 0;
    nl_object_keygen(o, &h, kWholeHash);
    return h;
}

void emit(std::vector<model::Event>* events, nl_object* o, bool removed) {
    if (!events) return;
    if (auto e = event_of(o, removed)) events->push_back(std::move(*e));
}
}  // namespace

std::unordered_multimap<std::uint32_t, nl_object*>::iterator RouteStore::find(nl_object* route) {
    auto [first, last] = routes_.equal_range(identity_hash(route));
    for (auto it = first; it != last; ++it)
        if (nl_object_identical(it->second, route)) return it;
    return routes_.end();
}

namespace {
bool same_hop(rtnl_nexthop* a, rtnl_nexthop* b) {
    nl_addr* ga = rtnl_route_nh_get_gateway(a);
    nl_addr* gb = rtnl_route_nh_get_gateway(b);
    return rtnl_route_nh_get_ifindex(a) == rtnl_route_nh_get_ifindex(b) &&
           (ga && gb ? nl_addr_cmp(ga, gb) == 0 : !ga && !gb);
}

// Whether the two routes go through the same next hops, in any order.
bool same_hops(rtnl_route* a, rtnl_route* b) {
    const int n = rtnl_route_get_nnexthops(a);
    if (n != rtnl_route_get_nnexthops(b)) return false;
    for (int i = 0; i < n; ++i) {
        bool found = false;
        for (int j = 0; j < n && !found; ++j) found = same_hop(rtnl_route_nexthop_n(a, i), rtnl_route_nexthop_n(b, j));
        if (!found) return false;
    }
    return true;
}
}  // namespace

// Per libnl identity (family, table, tos, priority, destination) the store holds the
// route the kernel forwards with, told by what the kernel says of each change:
// - A new route replaces the one held: a kernel since 4.16 tells an IPv6 multipath route
//   whole (RTA_MULTIPATH) on add, append and replace. libnl's cache merges instead
//   (route_update, from when next hops came one at a time), which made `ip -6 route
//   replace X via B` (how FRR updates a route) into X via A and B.
// - An IPv4 route appended beside one held (NLM_F_APPEND: `ip route append`) is a second
//   alias the kernel does not forward with while the first stands: kept out.
// - A deletion takes out the route held when it names its next hops; one next hop of an
//   IPv6 multipath route comes deleted alone and is taken out of it; a deletion naming
//   other next hops is of an alias not held, and changes nothing.
void RouteStore::include(nl_object* route, std::uint16_t flags, std::vector<model::Event>* events) {
    const bool del = nl_object_get_msgtype(route) == RTM_DELROUTE;
    auto* r = reinterpret_cast<rtnl_route*>(route);
    const auto it = find(route);
    nl_object* old = it == routes_.end() ? nullptr : it->second;
    auto* held = reinterpret_cast<rtnl_route*>(old);
    if (del) {
        if (!old) return;  // a route we never had
        if (!same_hops(held, r)) {
            if (rtnl_route_get_family(r) != AF_INET6 || rtnl_route_get_nnexthops(r) != 1) return;
            rtnl_nexthop* gone = rtnl_route_nexthop_n(r, 0);
            for (int i = 0; i < rtnl_route_get_nnexthops(held); ++i) {
                rtnl_nexthop* nh = rtnl_route_nexthop_n(held, i);
                if (!same_hop(nh, gone)) continue;
                rtnl_route_remove_nexthop(held, nh);
                rtnl_route_nh_free(nh);
                emit(events, old, false);  // one next hop fewer
                return;
            }
            return;
        }
        routes_.erase(it);
        emit(events, old, true);
        nl_object_put(old);
        return;
    }
    if (old && (flags & NLM_F_APPEND) && rtnl_route_get_family(r) == AF_INET) return;
    if (old) routes_.erase(it);
    nl_object_get(route);
    routes_.emplace(identity_hash(route), route);
    if (!old || nl_object_diff64(old, route)) emit(events, route, false);
    if (old) nl_object_put(old);
}

void RouteStore::add_dumped(nl_object* route) {
    if (find(route) != routes_.end()) return;
    nl_object_get(route);
    routes_.emplace(identity_hash(route), route);
}

namespace {
int take_route(nl_msg* msg, void* store) {
    if (const int err =
            nl_msg_parse(msg, [](nl_object* o, void* s) { static_cast<RouteStore*>(s)->add_dumped(o); }, store);
        err < 0)
        malformed(Malformed::Rtnetlink, std::string("a route in a dump: ") + nl_geterror(err));
    return NL_OK;
}
}  // namespace

Result<Done> RouteStore::dump(nl_sock* sock) {
    for (int attempt = 0; attempt < 8; ++attempt) {
        clear();
        if (int err = nl_rtgen_request(sock, RTM_GETROUTE, AF_UNSPEC, NLM_F_DUMP); err < 0)
            return fail(std::string("route dump: ") + nl_geterror(err));
        nl_socket_modify_cb(sock, NL_CB_VALID, NL_CB_CUSTOM, take_route, this);
        const int err = nl_recvmsgs_default(sock);
        if (err == -NLE_DUMP_INTR) continue;  // the table changed while it was read
        if (err < 0) return fail(std::string("route dump: ") + nl_geterror(err));
        return Done{};
    }
    return fail(std::string("route dump: interrupted every time (the table keeps changing)"));
}

void RouteStore::for_each(const std::function<void(nl_object*)>& fn) const {
    for (const auto& [_, o] : routes_) fn(o);
}

void RouteStore::clear() {
    for (auto& [_, o] : routes_) nl_object_put(o);
    routes_.clear();
}

}  // namespace dpo::kernel
