// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// What the NAT stage holds while it runs, as the compiler reads it: where first
// packets go and, per subscriber, the chunk its new connections are translated into
// (or why they are dropped). The NAT manager (nat_manager.hpp) keeps it; the compiler
// (core/compile) turns it into rules. Defined here, below the compiler, so that NAT
// never includes the compiler.

#include <map>
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

// What the compiler reads of a running NAT stage. Without one (nullptr), inner ->
// outer IPv4 of a mapping with `nat` is left to the kernel, and no connection state is
// tracked. The daemon's NAT manager is one; NatState below, a whole copy, is another.
class NatView {
public:
    virtual ~NatView() = default;
    // First packets of subscribers without a chunk go out of this device (the punt
    // pair's inject end, whose ingress also holds the way back); 0: nowhere, dropped.
    virtual int punt_ifindex() const = 0;
    virtual std::string punt_dev() const = 0;
    // The punt pair's other end, where the daemon reads punted frames.
    virtual std::string punt_sink_dev() const = 0;
    virtual std::optional<NatSubscriber> subscriber(const IpAddress& a) const = 0;
    // Every subscriber with rules (for the full compile).
    virtual std::vector<IpAddress> subscribers() const = 0;
};

// A NAT stage as a plain value: for the full compile, tests and `--show`.
struct NatState {
    int punt_ifindex = 0;  // first packets of subscribers without a chunk; 0: none, drop
    std::string punt_dev;  // the punt pair's inject end: its ingress holds the way back
    std::vector<NatSubscriber> subscribers;
    std::string punt_sink_dev;  // the punt pair's other end, where the daemon reads
};

// A NatState read through the NatView interface.
class NatStateView final : public NatView {
public:
    explicit NatStateView(const NatState& s) : s_(s) {
        for (std::size_t i = 0; i < s.subscribers.size(); ++i) index_.emplace(s.subscribers[i].address, i);
    }
    int punt_ifindex() const override { return s_.punt_ifindex; }
    std::string punt_dev() const override { return s_.punt_dev; }
    std::string punt_sink_dev() const override { return s_.punt_sink_dev; }
    std::optional<NatSubscriber> subscriber(const IpAddress& a) const override {
        const auto it = index_.find(a);
        if (it == index_.end()) return std::nullopt;
        return s_.subscribers[it->second];
    }
    std::vector<IpAddress> subscribers() const override {
        std::vector<IpAddress> out;
        for (const auto& [a, _] : index_) out.push_back(a);
        return out;
    }

private:
    const NatState& s_;
    std::map<IpAddress, std::size_t> index_;
};

}  // namespace dpo::nat
