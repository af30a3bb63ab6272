// SPDX-License-Identifier: GPL-2.0-or-later
// libFuzzer harness: the conntrack event mapping (lib/kernel/conntrack_watcher.cpp):
// a ctnetlink datagram as the event socket receives it, each message parsed by
// libnetfilter_conntrack (nfct_nlmsg_parse) and mapped to the daemon's entry
// (entry_of, which also reads the reply tuple's ICMP id from the raw message).
//
// take_datagram() is what ConntrackWatcher::process() does with each datagram it reads:
// every message checked (conntrack_message_valid: libnetfilter_conntrack 1.0.9 exit()s
// on an attribute not of its type), parsed, and mapped to an event of the zone.
//
// mnl_checked.cpp catches a getter's read past its attribute (libnetfilter_conntrack's
// calls included).
#include "kernel/conntrack_watcher.hpp"

#include <libmnl/libmnl.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace {

constexpr std::uint16_t kZone = 1;  // as the lab's NAT configurations

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // A block of the datagram's aligned length, zero-padded (libmnl walks a message's
    // attributes up to MNL_ALIGN(nlmsg_len), which a receive buffer always has room for):
    // a read past it is past the allocation.
    std::vector<char> buf(MNL_ALIGN(size), 0);
    std::copy(data, data + size, buf.begin());
    std::vector<dpo::kernel::ConntrackEvent> events;
    if (!dpo::kernel::take_datagram(buf.data(), buf.size(), kZone, events)) std::abort();
    for (const auto& e : events) {
        // What nat_runtime.cpp does with an event: an IPv4 connection of the zone.
        if (e.entry.zone != kZone) std::abort();
        if (e.entry.orig_src.family != e.entry.reply_dst.family) std::abort();
        (void)e.entry.orig_src.str();
        (void)e.entry.reply_dst.str();
    }
    return 0;
}
