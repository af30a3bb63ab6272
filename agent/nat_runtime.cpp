// SPDX-License-Identifier: GPL-2.0-or-later
#include "nat_runtime.hpp"

#include <fcntl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>

#include "core/log.hpp"
#include "core/malformed.hpp"
#include "ipfix_exporter.hpp"

namespace dpo::agent {

namespace {

nat::Seconds monotonic_now() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<nat::Seconds>(ts.tv_sec);
}

// With the kernel's default (2), a connection created while nobody listened never
// reports its end, and its chunk would never go idle after a restart.
void want_conntrack_events() {
    const char* path = "/proc/sys/net/netfilter/nf_conntrack_events";
    std::string value;
    if (std::ifstream in(path); in) std::getline(in, value);
    if (value == "1") return;
    std::ofstream out(path);
    out << "1\n";
    out.flush();
    if (!out)
        log::warning("conntrack-events", {{"sysctl", "net.netfilter.nf_conntrack_events"}, {"is", value},
                                          {"want", "1"},
                                          {"effect", "connections older than the daemon never report their end"}});
}

std::vector<nat::Connection> connections(const std::vector<kernel::ConntrackEntry>& entries) {
    std::vector<nat::Connection> out;
    for (const auto& e : entries)
        if (e.orig_src.family == Family::V4) out.push_back({e.orig_src, e.reply_dst, e.reply_dport});
    return out;
}

}  // namespace

Result<std::unique_ptr<NatRuntime>> NatRuntime::open(const Mapping& m) {
    want_conntrack_events();
    auto punt = kernel::PuntPort::open(m.uplink);
    if (!punt) return fail("nat punt port: " + punt.error());
    auto ct = kernel::ConntrackWatcher::open(m.nat->zone);
    if (!ct) return fail("nat conntrack: " + ct.error());
    const int timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (timer < 0) return fail(std::string("nat timer: ") + std::strerror(errno));
    itimerspec every_second{{1, 0}, {1, 0}};
    timerfd_settime(timer, 0, &every_second, nullptr);
    std::unique_ptr<NatRuntime> rt(new NatRuntime(*m.nat, std::move(*punt), std::move(*ct), timer));
    // After a restart: the chunks its connections hold stay theirs.
    if (!rt->resync()) return fail(std::string("nat: cannot dump conntrack"));
    return rt;
}

NatRuntime::NatRuntime(const Nat& config, std::unique_ptr<kernel::PuntPort> punt,
                       std::unique_ptr<kernel::ConntrackWatcher> conntrack, int timer)
    : config_(config), manager_(config), punt_(std::move(punt)), conntrack_(std::move(conntrack)), timer_(timer) {}

NatRuntime::~NatRuntime() { close(timer_); }

void NatRuntime::log_chunk_events() {
    const auto events = manager_.take_events();
    if (events.empty()) return;
    const auto wall_ms = IpfixExporter::wall_ms();
    if (on_chunk_events) on_chunk_events(events, wall_ms);
    metrics_->chunks(events);
    const auto wall = static_cast<std::int64_t>(wall_ms / 1000);
    for (const auto& e : events) nat::log_event(e, wall);
    if (exporter_) exporter_->chunk_events(events, wall_ms);
}

bool NatRuntime::resync() {
    auto live = conntrack_->dump();
    if (!live) {
        log::error("nat-resync-failed", {{"reason", live.error()}});
        return false;
    }
    manager_.resync(connections(*live), monotonic_now());
    log::info("nat-resynced", {{"connections", std::to_string(live->size())},
                               {"chunks", std::to_string(manager_.table().chunks_held())},
                               {"subscribers", std::to_string(manager_.table().subscribers())}});
    log_chunk_events();
    return true;
}

std::vector<IpAddress> NatRuntime::on_punt() {
    auto frames = punt_->receive();
    if (!frames) {
        log::error("nat-punt-failed", {{"reason", frames.error()}});
        return {};
    }
    const auto now = monotonic_now();
    const auto read = Metrics::Clock::now();
    metrics_->punted(frames->size());
    for (auto& f : *frames) {
        const auto sub = nat::ipv4_source(f);
        if (!sub) {  // the punt rules send IPv4 only: anything else is not ours to read
            malformed(Malformed::PuntFrame, "a " + std::to_string(f.size()) + "-byte frame that is not IPv4");
            continue;
        }
        auto chunk = manager_.first_packet(*sub, now);
        if (!chunk) {
            refused(*sub, chunk.error(), now);
            continue;  // dropped: counted by the manager
        }
        if (waiting_.size() >= kMaxWaiting) {
            ++dropped_.queue_full;  // its chunk is pulled; the subscriber's next packet finds the rule
            continue;
        }
        waiting_.push_back({*sub, std::move(f), read});
    }
    if (auto lost = punt_->take_lost(); lost && *lost)
        log::warning("nat-punt-lost", {{"frames", std::to_string(*lost)}});
    log_chunk_events();
    return manager_.take_changed();
}

// A refusal is told, but not one line per punted frame: a flood of first packets from
// subscribers out of chunks would flood the journal too.
void NatRuntime::refused(const IpAddress& subscriber, nat::Refusal why, nat::Seconds now) {
    ++dropped_.refused;
    if (now != refusal_second_) {
        log_suppressed();
        refusal_second_ = now;
        refusal_lines_ = 0;
    }
    if (refusal_lines_++ < kRefusalLinesPerSecond) {
        log::warning("nat-refused", {{"subscriber", subscriber.str()}, {"reason", nat::to_string(why)}});
        // Exported as the journal tells it: a flood is bounded the same way.
        if (exporter_) exporter_->refusal(why, subscriber, config_.max_chunks_per_subscriber, IpfixExporter::wall_ms());
    } else
        ++suppressed_;
}

void NatRuntime::log_suppressed() {
    if (!suppressed_) return;
    log::warning("nat-refused-suppressed", {{"frames", std::to_string(suppressed_)},
                                            {"limit", std::to_string(kRefusalLinesPerSecond) + " lines a second"}});
    suppressed_ = 0;
}

void NatRuntime::reinject_waiting(const std::function<bool(const IpAddress&)>& ready) {
    std::size_t dropped = 0;
    for (const auto& w : waiting_) {
        // A frame whose rule is not in would only be punted again.
        if (!ready(w.subscriber)) {
            ++dropped;
            continue;
        }
        if (auto r = punt_->reinject(w.frame); !r) log::warning("nat-reinject-failed", {{"reason", r.error()}});
        else metrics_->reinjected(Metrics::Clock::now() - w.read);
    }
    metrics_->first_packets_dropped("rule_not_in", dropped);
    if (dropped)
        log::warning("nat-first-packets-dropped",
                     {{"frames", std::to_string(dropped)}, {"reason", "their subscriber's rule is not in yet"}});
    waiting_.clear();
}

std::vector<IpAddress> NatRuntime::on_conntrack() {
    auto batch = conntrack_->process();
    if (!batch) {
        log::error("nat-conntrack-failed", {{"reason", batch.error()}});
        return {};
    }
    const auto now = monotonic_now();
    metrics_->conntrack_events(batch->events.size());
    for (const auto& e : batch->events) {
        if (e.entry.orig_src.family != Family::V4) continue;
        const nat::Connection c{e.entry.orig_src, e.entry.reply_dst, e.entry.reply_dport};
        if (e.kind == kernel::ConntrackEvent::Kind::New) manager_.connection_new(c, now);
        else manager_.connection_end(c, now);
    }
    for (const auto& r : manager_.take_refusals()) {  // a last chunk filled at the limit: no first packet waits
        log::warning("nat-refused", {{"subscriber", r.subscriber.str()}, {"reason", nat::to_string(r.why)},
                                     {"when", "its newest chunk filled"}});
        if (exporter_) exporter_->refusal(r.why, r.subscriber, config_.max_chunks_per_subscriber, IpfixExporter::wall_ms());
    }
    if (batch->overrun) {
        metrics_->overrun("conntrack");
        log::warning("resync", {{"reason", "conntrack overrun (ENOBUFS): events lost, table dumped again"}});
        resync();
    }
    log_chunk_events();
    return manager_.take_changed();
}

std::vector<IpAddress> NatRuntime::on_timer() {
    std::uint64_t ticks = 0;
    (void)!::read(timer_, &ticks, sizeof ticks);
    manager_.tick(monotonic_now());
    if (exporter_) exporter_->tick(IpfixExporter::wall_ms());
    log_suppressed();
    if (dropped_.queue_full != told_queue_full_) {
        log::warning("nat-first-packets-dropped", {{"frames", std::to_string(dropped_.queue_full - told_queue_full_)},
                                                   {"reason", "more waiting for their rule than " +
                                                                  std::to_string(kMaxWaiting)}});
        told_queue_full_ = dropped_.queue_full;
    }
    log_chunk_events();
    return manager_.take_changed();
}

}  // namespace dpo::agent
