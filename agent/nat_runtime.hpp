// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The NAT stage at run time: the punt port (first packets), the conntrack watcher
// (connections per chunk), a one-second timer (idle chunks), around the pure
// nat::NatManager. It is the engine's view of the stage (nat::NatView) and says which
// subscribers changed; the daemon hands them to the engine, then gives back the first
// packets whose subscriber's rule is in.

#include <ctime>
#include <functional>
#include <memory>
#include <vector>

#include "core/mapping.hpp"
#include "core/nat/nat_manager.hpp"
#include "core/nat/state.hpp"
#include "kernel/conntrack_watcher.hpp"
#include "kernel/punt_port.hpp"
#include "metrics.hpp"

namespace dpo::agent {

class IpfixExporter;

class NatRuntime final : public nat::NatView {
public:
    static Result<std::unique_ptr<NatRuntime>> open(const Mapping& m);
    ~NatRuntime() override;

    int punt_fd() const { return punt_->fd(); }
    int conntrack_fd() const { return conntrack_->fd(); }
    int timer_fd() const { return timer_; }

    // Each returns the subscribers whose rules must change. Those of first packets are
    // urgent: the packets wait for them.
    std::vector<IpAddress> on_punt();
    std::vector<IpAddress> on_conntrack();
    std::vector<IpAddress> on_timer();
    // The waiting first packets whose subscriber's rule is in go back into the uplink;
    // the others are dropped (their subscriber's next packet comes again).
    void reinject_waiting(const std::function<bool(const IpAddress&)>& ready);
    bool waiting() const { return !waiting_.empty(); }
    // The subscribers the stage held when it started (a restart's conntrack table).
    std::vector<IpAddress> take_changed() { return manager_.take_changed(); }

    // nat::NatView
    int punt_ifindex() const override { return punt_->punt_ifindex(); }
    std::string punt_dev() const override { return punt_->punt_dev(); }
    std::string punt_sink_dev() const override { return kernel::PuntPort::kPuntDev; }
    std::optional<nat::NatSubscriber> subscriber(const IpAddress& a) const override { return manager_.subscriber(a); }
    std::vector<IpAddress> subscribers() const override { return manager_.subscribers(); }

    const Nat& config() const { return config_; }
    const nat::NatManager& manager() const { return manager_; }
    // Told every batch of chunk events (with the wall clock, ms) before they are logged.
    std::function<void(const std::vector<nat::ChunkEvent>&, std::int64_t)> on_chunk_events;
    std::size_t waiting_count() const { return waiting_.size(); }
    // Where the stage reports what it did (punts, latency, chunks); none until set.
    void report_to(Metrics& m) { metrics_ = &m; }
    // Chunk events and refusals go to the exporter too (nullptr: the journal only).
    void export_to(IpfixExporter* exporter) { exporter_ = exporter; }

    // First packets the daemon itself did not serve (the punt rule's police action
    // counts those the kernel dropped before they came here).
    struct Dropped {
        std::uint64_t queue_full = 0;  // more waiting for their rule than kMaxWaiting
        std::uint64_t refused = 0;     // no chunk for the subscriber (limit, pool empty)
    };
    const Dropped& dropped() const { return dropped_; }
    // First packets held while their subscriber's rule goes in, at most. A flood is
    // bounded before this (the punt rule's police action, the socket's buffer); this
    // bounds what one turn of the loop can take in on top.
    static constexpr std::size_t kMaxWaiting = 1024;
    // nat-refused lines a second, at most; the rest are counted into one line a second.
    static constexpr std::uint64_t kRefusalLinesPerSecond = 10;

private:
    NatRuntime(const Nat& config, std::unique_ptr<kernel::PuntPort> punt,
               std::unique_ptr<kernel::ConntrackWatcher> conntrack, int timer);
    void log_chunk_events();
    bool resync();
    void refused(const IpAddress& subscriber, nat::Refusal why, nat::Seconds now);
    void log_suppressed();

    struct Waiting {
        IpAddress subscriber;
        std::vector<std::uint8_t> frame;
        Metrics::Clock::time_point read{};  // when it came from the punt port
    };

    Nat config_;
    nat::NatManager manager_;
    std::unique_ptr<kernel::PuntPort> punt_;
    std::unique_ptr<kernel::ConntrackWatcher> conntrack_;
    int timer_;
    std::vector<Waiting> waiting_;  // first packets whose rule is on its way
    Dropped dropped_;
    nat::Seconds refusal_second_ = 0;
    std::uint64_t refusal_lines_ = 0;  // told in refusal_second_
    std::uint64_t suppressed_ = 0;     // not told since the last summary
    std::uint64_t told_queue_full_ = 0;
    Metrics* metrics_ = &Metrics::none();
    IpfixExporter* exporter_ = nullptr;
};

}  // namespace dpo::agent
