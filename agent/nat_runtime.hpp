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

namespace dpo::agent {

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

private:
    NatRuntime(const Nat& config, std::unique_ptr<kernel::PuntPort> punt,
               std::unique_ptr<kernel::ConntrackWatcher> conntrack, int timer);
    void log_chunk_events();
    bool resync();

    struct Waiting {
        IpAddress subscriber;
        std::vector<std::uint8_t> frame;
    };

    Nat config_;
    nat::NatManager manager_;
    std::unique_ptr<kernel::PuntPort> punt_;
    std::unique_ptr<kernel::ConntrackWatcher> conntrack_;
    int timer_;
    std::vector<Waiting> waiting_;  // first packets whose rule is on its way
};

}  // namespace dpo::agent
