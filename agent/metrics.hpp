// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Prometheus metrics (docs/metrics.md), served at http://ADDRESS:PORT/metrics with
// `--metrics ADDRESS:PORT`.
//
// The loop only calls the methods below, each O(1) but refresh(): counters and
// histograms are prometheus-cpp's, atomic, so the loop never waits for a scrape.
// refresh() copies what is O(rules) or O(chunks) to compute (rules by device and state,
// pool utilisation) into a snapshot under a mutex, at most once a second and only when
// something changed; a scrape reads that snapshot under the same mutex (a copy, no
// computation) and the shared tc actions' statistics (per-egress and per-drop-reason
// counters) over a netlink socket of its own, on the exposer's thread: it never reads
// the loop's data.
//
// Cost of a scrape: O(devices x states + pool addresses + interfaces) to serialise,
// plus the action dump, O(rules) in the kernel (every rule holds a gact of its own;
// kernel/action_stats.hpp).

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/engine/engine.hpp"
#include "core/mapping.hpp"
#include "core/model/kernel_model.hpp"
#include "core/nat/chunks.hpp"
#include "core/program/backend.hpp"
#include "core/result.hpp"

namespace dpo::agent {

class NatRuntime;

// "127.0.0.1:9641" or "[::1]:9641" -> the same, checked (an address literal and a port
// 1-65535); nothing for anything else (a host name, no port, a bare port).
std::optional<std::string> parse_metrics_address(std::string_view s);

class Metrics {
public:
    using Clock = std::chrono::steady_clock;
    virtual ~Metrics() = default;

    // The metrics off: every call does nothing.
    static Metrics& none();

    // ---- from the loop
    virtual void mapping(const Mapping&) {}  // started or reloaded: names of the counters
    virtual void pass(const engine::Pass&, std::chrono::nanoseconds) {}
    virtual void kernel_event(const model::Event&) {}
    virtual void tc_events(const program::Applied&) {}
    // Notifications lost (ENOBUFS) on "rtnetlink", "conntrack" (both dumped again) or "tc"
    // (an audit follows).
    virtual void overrun(std::string_view) {}
    // At most once a second, and only when something changed since: the O(rules) part.
    virtual void refresh(const engine::Engine&, const NatRuntime*, Clock::time_point) {}
    // When the loop must turn for refresh(), if it has anything to refresh.
    virtual std::optional<Clock::time_point> due() const { return std::nullopt; }

    // ---- from the NAT stage (agent/nat_runtime.cpp)
    virtual void conntrack_events(std::size_t) {}
    virtual void punted(std::size_t) {}                         // first packets read from the punt port
    virtual void reinjected(std::chrono::nanoseconds) {}        // one went back (read -> reinjected)
    virtual void first_packets_dropped(std::string_view, std::size_t) {}  // by reason
    virtual void chunks(const std::vector<nat::ChunkEvent>&) {}
};

// Listens on `address` (parse_metrics_address's form); fails when it cannot bind.
Result<std::unique_ptr<Metrics>> serve_metrics(const std::string& address);

}  // namespace dpo::agent
