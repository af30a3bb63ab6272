// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The kernel's routes as libnl-route-3 objects, in place of libnl's route cache: per
// libnl's identity of a route, the one the kernel forwards with (route_store.cpp says
// how each change is taken), in a hash table that grows with the table. libnl's cache
// has a fixed table of a few thousand buckets: at 100k routes every insert walks a
// chain of dozens of routes (2.2 s for a dump of 100k routes, ~40 us a route event,
// measured), where this takes the same dump in 0.2 s and an event in O(1). And libnl's
// cache merges a replaced IPv6 route with the one it replaces, and keeps a next hop
// deleted from an IPv6 multipath route: both were this daemon's, and are fixed here
// (test/kernel/route_probe.cpp holds the store to the kernel's own dump).

#include <cstdint>
#include <functional>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/model/kernel_model.hpp"
#include "core/result.hpp"

struct nl_object;
struct nl_sock;

namespace dpo::kernel {

class RouteStore {
public:
    RouteStore() = default;
    RouteStore(const RouteStore&) = delete;
    RouteStore& operator=(const RouteStore&) = delete;
    ~RouteStore() { clear(); }

    // Every route of every table and family, over `sock` (a connected rtnetlink socket),
    // replacing what the store held. A dump the kernel marks interrupted (the table
    // changed under it) is taken again.
    Result<Done> dump(nl_sock* sock);
    // One route message's object (RTM_NEWROUTE or RTM_DELROUTE, from nl_msg_parse) and
    // the message's flags: what changed comes out as an event (none when nothing did).
    void include(nl_object* route, std::uint16_t flags, std::vector<model::Event>* events);
    // One route of a dump: as libnl's refill, the first of routes libnl deems the same
    // (its identity leaves out the device: fe80::/64 of each device) is kept.
    void add_dumped(nl_object* route);

    void for_each(const std::function<void(nl_object*)>& fn) const;
    std::size_t size() const { return routes_.size(); }
    void clear();

private:
    std::unordered_multimap<std::uint32_t, nl_object*>::iterator find(nl_object* route);
    std::unordered_multimap<std::uint32_t, nl_object*> routes_;  // by libnl's identity hash
};

}  // namespace dpo::kernel
