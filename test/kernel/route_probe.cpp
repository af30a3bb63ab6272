// SPDX-License-Identifier: GPL-2.0-or-later
// Run by the lab (scenario rtnl_routes) in a namespace with devices d0 and d1 (10.9.0.1/24,
// 10.9.1.1/24, fd09::1/64, fd09:1::1/64). The watcher keeps routes in its own store
// (kernel/route_store) instead of libnl's route cache. This changes routes with `ip`
// the ways a routing daemon does (add, replace, append, multipath, metrics, tables,
// deleting one next hop or a whole route), feeds every notification to a RouteStore,
// and after each command checks that the store holds what a fresh dump of the kernel
// holds: the kernel is the oracle. Link down/up is left out: the kernel removes IPv4
// routes of a downed link without a notification (the model handles the link event).
// One "PASS|FAIL <what>: <detail>" line per check; exit 1 if any failed.
#include <linux/rtnetlink.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/object.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernel/route_store.hpp"
#include "kernel/rtnl_snapshot.hpp"

using namespace dpo;

namespace {

std::string text(const Route& r) {
    std::string s = std::to_string(r.table) + " " + r.destination.str() + " prio " + std::to_string(r.priority) +
                    " type " + std::to_string(r.type) + " tos " + std::to_string(r.tos);
    std::vector<std::string> hops;  // in any order: the kernel lists an appended one first or last
    for (const auto& nh : r.nexthops)
        hops.push_back(" via " + (nh.gateway ? nh.gateway->str() : std::string("-")) + " dev " + std::to_string(nh.ifindex));
    std::sort(hops.begin(), hops.end());
    for (const auto& h : hops) s += h;
    return s;
}

std::vector<std::string> routes_of(const std::function<void(const std::function<void(nl_object*)>&)>& each) {
    std::vector<std::string> out;
    each([&](nl_object* o) {
        if (auto e = kernel::event_of(o, false))
            if (const auto* r = std::get_if<model::RouteEvent>(&*e)) out.push_back(text(r->route));
    });
    std::sort(out.begin(), out.end());
    return out;
}

std::vector<std::string> store_routes(const kernel::RouteStore& store) {
    return routes_of([&](const std::function<void(nl_object*)>& fn) { store.for_each(fn); });
}

std::string differ(const std::vector<std::string>& a, const std::vector<std::string>& b) {
    std::string out;
    for (const auto& x : a)
        if (!std::binary_search(b.begin(), b.end(), x)) out += " kernel only: [" + x + "]";
    for (const auto& x : b)
        if (!std::binary_search(a.begin(), a.end(), x)) out += " store only: [" + x + "]";
    return out;
}

struct Fed {
    kernel::RouteStore* store;
    std::uint16_t flags = 0;  // of the message being parsed
    std::size_t messages = 0;
};

int on_message(nl_msg* msg, void* arg) {
    auto* fed = static_cast<Fed*>(arg);
    ++fed->messages;
    fed->flags = nlmsg_hdr(msg)->nlmsg_flags;
    nl_msg_parse(
        msg,
        [](nl_object* o, void* a) {
            auto* f = static_cast<Fed*>(a);
            std::vector<model::Event> events;
            f->store->include(o, f->flags, &events);
        },
        fed);
    return NL_OK;
}

}  // namespace

int main() {
    nl_sock* listener = nl_socket_alloc();
    nl_socket_disable_seq_check(listener);
    if (!listener || nl_connect(listener, NETLINK_ROUTE) < 0 ||
        nl_socket_add_memberships(listener, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, 0) < 0) {
        std::printf("FAIL listen: cannot subscribe to route notifications\n");
        return 1;
    }
    nl_socket_set_nonblocking(listener);
    nl_sock* dumper = nl_socket_alloc();
    nl_connect(dumper, NETLINK_ROUTE);
    kernel::RouteStore store;
    if (auto d = store.dump(dumper); !d) {
        std::printf("FAIL start: %s\n", d.error().c_str());
        return 1;
    }
    Fed fed{&store};
    nl_socket_modify_cb(listener, NL_CB_VALID, NL_CB_CUSTOM, on_message, &fed);
    auto kernel_routes = [&] {
        kernel::RouteStore fresh;
        if (auto d = fresh.dump(dumper); !d) std::printf("FAIL dump: %s\n", d.error().c_str());
        return store_routes(fresh);
    };
    int failed = 0;
    auto check = [&](const std::string& what, const std::vector<std::string>& a, const std::vector<std::string>& b) {
        const std::string d = differ(a, b);
        std::printf("%s %s: %s\n", d.empty() ? "PASS" : "FAIL", what.c_str(),
                    d.empty() ? (std::to_string(a.size()) + " routes alike").c_str() : d.c_str());
        failed += d.empty() ? 0 : 1;
    };

    const char* steps[] = {
        "ip route add 10.50.0.0/16 via 10.9.0.2",
        "ip route replace 10.50.0.0/16 via 10.9.1.2",
        "ip route add 10.51.0.0/16 nexthop via 10.9.0.2 nexthop via 10.9.1.2",
        "ip route append 10.50.0.0/16 via 10.9.0.3",
        "ip route del 10.50.0.0/16 via 10.9.0.3",
        "ip route add 10.52.0.0/24 via 10.9.0.2 metric 50",
        "ip route add 10.52.0.0/24 via 10.9.1.2 metric 60",
        "ip route del 10.52.0.0/24 metric 50",
        "ip route add table 100 10.60.0.0/16 via 10.9.0.2",
        "ip route add blackhole 10.61.0.0/16",
        "ip -6 route add fd50::/48 via fd09::2",
        "ip -6 route replace fd50::/48 via fd09:1::2",
        "ip -6 route replace fd50::/48 via fd09::2",
        "ip -6 route del fd50::/48",
        "ip -6 route add fd50::/48 via fd09::2",
        "ip -6 route replace fd50::/48 nexthop via fd09::2 nexthop via fd09:1::2",
        "ip -6 route replace fd50::/48 via fd09:1::3",
        "ip -6 route add fd51::/48 nexthop via fd09::2 nexthop via fd09:1::2",
        "ip -6 route append fd51::/48 via fd09::3",
        "ip -6 route del fd51::/48 via fd09::3",
        "ip -6 route del fd51::/48",
        "ip -6 route add fd52::/48 via fd09::2 metric 10",
        "ip -6 route add fd52::/48 via fd09:1::2 metric 20",
        "ip -6 route del fd52::/48 metric 10",
        "ip route del 10.51.0.0/16",
        "ip route flush table 100",
        "ip -6 route flush fd50::/48",
        "ip -6 route add table 100 fd53::/48 via fd09::2 metric 5",
        "ip -6 route replace table 100 fd53::/48 via fd09:1::2 metric 5",
        "ip -6 route flush table 100",
    };
    for (const char* step : steps) {
        if (std::system((std::string(step) + " 2>/dev/null").c_str()) != 0) {
            std::printf("FAIL `%s`: the command failed\n", step);
            ++failed;
            continue;
        }
        while (nl_recvmsgs_default(listener) >= 0) {
        }
        check(std::string("after `") + step + "`", kernel_routes(), store_routes(store));
    }
    std::printf("# %zu notifications followed\n", fed.messages);
    nl_socket_free(dumper);
    nl_socket_free(listener);
    return failed ? 1 : 0;
}
