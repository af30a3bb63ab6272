// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Follows the conntrack table of one zone with libnetfilter_conntrack, for NAT
// accounting: which connections hold which public address:port. It subscribes to
// NEW and DESTROY events before anyone dumps, so no connection falls between the two;
// an entry may then show up both in a dump and as an event, and the caller counts
// idempotently. A netlink overrun (ENOBUFS) loses events: process() says so and the
// caller dumps again.
//
// Kernel caveat (nf_conntrack_events=2, the default of Debian 12's 6.1): the kernel
// attaches the event extension to a connection only if someone listened when it was
// created. A connection created while no listener existed never sends its DESTROY
// event, so a restarted daemon sees such connections in its dump but not when they
// end. net.netfilter.nf_conntrack_events=1 (per network namespace) lifts that.

#include <linux/netlink.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/ip.hpp"
#include "core/result.hpp"

struct nfct_handle;

namespace dpo::kernel {

// One connection, as NAT accounting needs it. Ports in host order. For ICMP and
// ICMPv6 the echo identifier stands in for the port, as NAT translates it: the
// original one in orig_sport, the translated one in reply_dport; orig_dport and
// reply_sport stay 0.
struct ConntrackEntry {
    std::uint8_t l4proto = 0;      // IPPROTO_TCP/UDP/ICMP...
    IpAddress orig_src, orig_dst;  // original direction (subscriber -> outside)
    std::uint16_t orig_sport = 0, orig_dport = 0;
    // Reply direction: reply_dst:reply_dport is the translated source (public
    // address:port) when SNAT applied, the original source otherwise.
    IpAddress reply_src, reply_dst;
    std::uint16_t reply_sport = 0, reply_dport = 0;
    std::uint16_t zone = 0;

    bool operator==(const ConntrackEntry&) const = default;
};

// Whether a ctnetlink message's attributes are each of the type libnetfilter_conntrack
// expects (it exit()s on one that is not): checked before the library parses it.
bool conntrack_message_valid(const nlmsghdr* nlh);

struct ConntrackEvent {
    enum class Kind : std::uint8_t { New, Destroy } kind;
    ConntrackEntry entry;
};

// One datagram of the event socket: its NEW and DESTROY events of connections in `zone`
// appended to `out`; a malformed message is skipped and counted (core/malformed). False
// only when out of memory. (ConntrackWatcher::process() reads datagrams into this; the
// fuzzer feeds it directly.)
bool take_datagram(const char* data, std::size_t size, std::uint16_t zone, std::vector<ConntrackEvent>& out);

class ConntrackWatcher {
public:
    // Subscribes to NEW and DESTROY events (NFNLGRP_CONNTRACK_NEW | _DESTROY) with a
    // large receive buffer (SO_RCVBUFFORCE 32 MiB, falling back to SO_RCVBUF),
    // non-blocking. Only entries of `zone` are reported (a zone in both directions,
    // as tc ct sets it; entries with a per-direction zone are never reported).
    static Result<std::unique_ptr<ConntrackWatcher>> open(std::uint16_t zone);
    ~ConntrackWatcher();
    ConntrackWatcher(const ConntrackWatcher&) = delete;
    ConntrackWatcher& operator=(const ConntrackWatcher&) = delete;

    int fd() const;

    struct Batch {
        std::vector<ConntrackEvent> events;
        bool overrun = false;  // ENOBUFS: events were lost, dump() again
    };
    // Reads what is pending without blocking: at most kMaxMessagesPerCall
    // messages, so a flood cannot starve the caller's other work; the rest keeps
    // the fd readable.
    Result<Batch> process();
    static constexpr int kMaxMessagesPerCall = 4096;

    // The current table of `zone` (IPv4 and IPv6), for a restart and after an
    // overrun. Uses its own socket, so pending events stay queued meanwhile.
    Result<std::vector<ConntrackEntry>> dump();

private:
    ConntrackWatcher(nfct_handle* h, std::uint16_t zone) : events_(h), zone_(zone) {}

    nfct_handle* events_;
    std::uint16_t zone_;
};

}  // namespace dpo::kernel
