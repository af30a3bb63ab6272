// SPDX-License-Identifier: GPL-2.0-or-later
// Run by the lab (scenario conntrack_watch): drives kernel::ConntrackWatcher against
// the real kernel and prints what it sees, one line each, for the scenario to check.
//   ct-probe dump ZONE                  "ENTRY <entry>" per entry, then "DUMP <n>"
//   ct-probe watch ZONE SECONDS [COUNT] "READY" once subscribed, then "NEW|DESTROY
//                                       <entry>" per event until COUNT events (then
//                                       whatever else is already queued) or SECONDS;
//                                       "OVERRUN" if events were lost; "END <n>"
//   ct-probe overrun ZONE               shrinks the watcher's receive buffer to the
//                                       kernel's minimum, prints "READY", waits for a
//                                       line on stdin (the scenario makes events
//                                       meanwhile), then one process(): "BATCH
//                                       events=<n> overrun=<0|1>", then dump():
//                                       "DUMP <n>"
// <entry> is "udp 10.100.0.2:40000->203.0.113.9:53 reply 203.0.113.9:53->198.51.100.3:4711 zone 1"
// (IPv6 addresses in brackets). Exit 0, or 1 with "ERROR <why>".
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "core/gcc_workarounds.hpp"
#include "kernel/conntrack_watcher.hpp"

using namespace dpo;
using kernel::ConntrackEntry;
using kernel::ConntrackEvent;
using kernel::ConntrackWatcher;

namespace {

std::string proto_name(std::uint8_t p) {
    switch (p) {
        case IPPROTO_TCP: return "tcp";
        case IPPROTO_UDP: return "udp";
        case IPPROTO_ICMP: return "icmp";
        case IPPROTO_ICMPV6: return "icmpv6";
        default: return std::to_string(p);
    }
}

// GCC 12 false positive at -O3 (GCC PR 105329): "literal" + std::string&& is flagged by
// -Wrestrict inside libstdc++'s basic_string::_M_replace.
DPO_GCC_WARNING_OFF("-Wrestrict")
std::string endpoint(const IpAddress& a, std::uint16_t port) {
    return (a.family == Family::V6 ? "[" + a.str() + "]" : a.str()) + ":" + std::to_string(port);
}
DPO_GCC_WARNING_ON

std::string describe(const ConntrackEntry& e) {
    return proto_name(e.l4proto) + " " + endpoint(e.orig_src, e.orig_sport) + "->" +
           endpoint(e.orig_dst, e.orig_dport) + " reply " + endpoint(e.reply_src, e.reply_sport) + "->" +
           endpoint(e.reply_dst, e.reply_dport) + " zone " + std::to_string(e.zone);
}

int error(const std::string& why) {
    std::printf("ERROR %s\n", why.c_str());
    return 1;
}

int print_dump(ConntrackWatcher& w) {
    auto entries = w.dump();
    if (!entries) return error(entries.error());
    for (const auto& e : *entries) std::printf("ENTRY %s\n", describe(e).c_str());
    std::printf("DUMP %zu\n", entries->size());
    return 0;
}

int print_batch(const ConntrackWatcher::Batch& b) {
    for (const auto& ev : b.events)
        std::printf("%s %s\n", ev.kind == ConntrackEvent::Kind::New ? "NEW" : "DESTROY", describe(ev.entry).c_str());
    if (b.overrun) std::printf("OVERRUN\n");
    std::fflush(stdout);
    return static_cast<int>(b.events.size());
}

int watch(ConntrackWatcher& w, int seconds, long count) {
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::seconds(seconds);
    long seen = 0;
    while (count <= 0 || seen < count) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
        if (left <= 0) break;
        pollfd p{w.fd(), POLLIN, 0};
        if (poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) return error(std::strerror(errno));
        auto b = w.process();
        if (!b) return error(b.error());
        seen += print_batch(*b);
    }
    // Whatever else is queued already (an event that should not have been reported
    // would be here: the kernel queues an event before the command making it returns).
    auto b = w.process();
    if (!b) return error(b.error());
    seen += print_batch(*b);
    std::printf("END %ld\n", seen);
    return 0;
}

int overrun(ConntrackWatcher& w) {
    // The kernel clamps this to its minimum (a few KiB): a handful of events overflow it.
    const int tiny = 1;
    if (setsockopt(w.fd(), SOL_SOCKET, SO_RCVBUF, &tiny, sizeof tiny) != 0) return error(std::strerror(errno));
    std::printf("READY\n");
    std::fflush(stdout);
    std::string line;
    std::getline(std::cin, line);
    auto b = w.process();
    if (!b) return error(b.error());
    std::printf("BATCH events=%zu overrun=%d\n", b->events.size(), b->overrun ? 1 : 0);
    return print_dump(w);
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    const bool ok = (mode == "dump" && argc == 3) || (mode == "watch" && (argc == 4 || argc == 5)) ||
                    (mode == "overrun" && argc == 3);
    if (!ok) {
        std::fprintf(stderr, "usage: ct-probe dump ZONE | watch ZONE SECONDS [COUNT] | overrun ZONE\n");
        return 2;
    }
    const auto zone = static_cast<std::uint16_t>(std::strtoul(argv[2], nullptr, 10));
    auto w = ConntrackWatcher::open(zone);
    if (!w) return error(w.error());
    if (mode == "dump") return print_dump(**w);
    if (mode == "overrun") return overrun(**w);
    std::printf("READY\n");
    std::fflush(stdout);
    return watch(**w, std::atoi(argv[3]), argc == 5 ? std::atol(argv[4]) : 0);
}
