// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// What the NAT stage holds while it runs, as the compiler reads it: where first
// packets go and, per subscriber, the chunk its new connections are translated into
// (or why they are dropped). The NAT manager (nat_manager.hpp) keeps it; the compiler
// (core/compile) turns it into rules. Defined here, below the compiler, so that NAT
// never includes the compiler.

#include <optional>
#include <string>
#include <vector>

#include "core/ip.hpp"
#include "core/nat/chunks.hpp"

namespace dpo::nat {

struct NatSubscriber {
    IpAddress address;
    // The chunk new connections are translated into; nothing: the subscriber can
    // have no more ports (chunk limit, or its address is out of chunks): drop.
    std::optional<ChunkPorts> commit;
    // Without a chunk to commit into: why (chosen drop counter).
    Refusal refusal = Refusal::ChunkLimit;
    bool operator==(const NatSubscriber&) const = default;
};

// Without it (nullptr), inner -> outer IPv4 of a mapping with `nat` is left to the
// kernel, and no connection state is tracked.
struct NatState {
    int punt_ifindex = 0;  // first packets of subscribers without a chunk; 0: none, drop
    std::string punt_dev;  // the punt pair's inject end: its ingress holds the way back
    std::vector<NatSubscriber> subscribers;
};

}  // namespace dpo::nat
