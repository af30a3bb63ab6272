// SPDX-License-Identifier: GPL-2.0-or-later
#include "ipfix_exporter.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>

#include "core/log.hpp"

namespace dpo::agent {

namespace {

std::uint32_t seconds(std::uint64_t ms) { return static_cast<std::uint32_t>(ms / 1000); }

// The sequence number in a message's header (RFC 7011, 3.1).
std::uint32_t sequence_of(const std::vector<std::uint8_t>& m) {
    return (std::uint32_t{m[8]} << 24) | (std::uint32_t{m[9]} << 16) | (std::uint32_t{m[10]} << 8) | m[11];
}

}  // namespace

std::uint64_t IpfixExporter::wall_ms() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1'000'000;
}

IpfixExporter::~IpfixExporter() {
    for (auto& t : targets_) close(t);
}

void IpfixExporter::configure(const std::optional<NatLogging>& config, std::uint64_t now) {
    const NatLogging next = config.value_or(NatLogging{});
    if (enabled_ == config.has_value() && (!enabled_ || next == config_)) return;
    // A new observation domain is a new stream for every collector.
    const bool restart = !enabled_ || next.observation_domain_id != config_.observation_domain_id;
    std::vector<Target> kept;
    for (auto& t : targets_) {
        const bool listed = std::find(next.collectors.begin(), next.collectors.end(), t.where) != next.collectors.end();
        if (listed && !restart) kept.push_back(std::move(t));
        else close(t);
    }
    targets_.clear();
    for (const auto& c : next.collectors) {
        auto it = std::find_if(kept.begin(), kept.end(), [&](const Target& t) { return t.where == c; });
        if (it != kept.end()) {
            targets_.push_back(std::move(*it));
            continue;
        }
        targets_.push_back(Target{c, nat::ipfix::Stream(next.observation_domain_id)});
        open(targets_.back(), now);
    }
    config_ = next;
    enabled_ = config.has_value();
    if (!enabled_) {
        log::notice("ipfix-stopped", {{"reason", "no nat.logging in the mapping"}});
        return;
    }
    std::string list;
    for (const auto& t : targets_) list += (list.empty() ? "" : ",") + t.where.str();
    log::notice("ipfix-exporting", {{"collectors", list},
                                    {"observation_domain", std::to_string(config_.observation_domain_id)},
                                    {"template_refresh_seconds", std::to_string(config_.template_refresh_seconds)}});
}

void IpfixExporter::open(Target& t, std::uint64_t now) {
    const bool v6 = t.where.address.family == Family::V6;
    const int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        failed(t, errno, now, false);
        return;
    }
    sockaddr_storage sa{};
    socklen_t len = 0;
    if (v6) {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&sa);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(t.where.port);
        std::memcpy(&s6->sin6_addr, t.where.address.bytes.data(), 16);
        len = sizeof *s6;
    } else {
        auto* s4 = reinterpret_cast<sockaddr_in*>(&sa);
        s4->sin_family = AF_INET;
        s4->sin_port = htons(t.where.port);
        std::memcpy(&s4->sin_addr, t.where.address.bytes.data(), 4);
        len = sizeof *s4;
    }
    // Connected: the kernel picks the source once, and an ICMP error from the collector
    // comes back as an error on this socket instead of being lost.
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
        const int e = errno;
        ::close(fd);
        failed(t, e, now, false);
        return;
    }
    t.fd = fd;
    t.templates_due = true;
    send_templates(t, now);
}

void IpfixExporter::close(Target& t) {
    if (t.fd >= 0) ::close(t.fd);
    t.fd = -1;
}

void IpfixExporter::failed(Target& t, int error, std::uint64_t now, bool lost) {
    if (lost) {
        ++counters_.send_errors;
        ++t.failed;
    }
    // The collector may have restarted or been unreachable: it needs the templates again.
    t.templates_due = true;
    if (t.told_once && now - t.told_ms < kErrorLogIntervalMs) return;
    log::warning("ipfix-send-failed", {{"collector", t.where.str()},
                                       {"error", std::strerror(error)},
                                       {"datagrams", std::to_string(t.failed)},
                                       {"effect", "NAT events lost for this collector (a gap in its sequence numbers); "
                                                  "told once a minute at most"}});
    t.failed = 0;
    t.told_ms = now;
    t.told_once = true;
}

bool IpfixExporter::send(Target& t, const std::vector<std::uint8_t>& message, std::uint64_t now, std::size_t records) {
    if (t.fd < 0) {
        failed(t, ENOTCONN, now, true);
        return false;
    }
    if (::send(t.fd, message.data(), message.size(), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        failed(t, errno, now, true);
        return false;
    }
    ++counters_.messages;
    counters_.records += records;
    return true;
}

void IpfixExporter::send_templates(Target& t, std::uint64_t now) {
    if (send(t, t.stream.templates(seconds(now)), now, 0)) {
        t.templates_due = false;
        t.templates_sent_ms = now;
    }
}

void IpfixExporter::send_records(const std::vector<nat::ipfix::Record>& records, std::uint64_t now) {
    if (!enabled_ || records.empty()) return;
    for (auto& t : targets_) {
        const bool with_templates = t.templates_due;
        const auto messages = t.stream.encode(records, seconds(now), with_templates);
        for (std::size_t i = 0; i < messages.size(); ++i) {
            // Records in this message: the next one's sequence number less its own.
            const std::uint32_t next = i + 1 < messages.size() ? sequence_of(messages[i + 1]) : t.stream.sequence();
            if (send(t, messages[i], now, next - sequence_of(messages[i])) && i == 0 && with_templates) {
                t.templates_due = false;
                t.templates_sent_ms = now;
            }
        }
    }
}

void IpfixExporter::chunk_events(const std::vector<nat::ChunkEvent>& events, std::uint64_t now) {
    if (!enabled_ || events.empty()) return;
    std::vector<nat::ipfix::Record> records;
    records.reserve(events.size());
    for (const auto& e : events) records.push_back(nat::ipfix::record(e, now));
    send_records(records, now);
}

void IpfixExporter::refusal(nat::Refusal why, const IpAddress& subscriber, std::uint32_t max_chunks,
                            std::uint64_t now) {
    if (!enabled_) return;
    send_records({nat::ipfix::record(why, subscriber, max_chunks, now)}, now);
}

void IpfixExporter::tick(std::uint64_t now) {
    if (!enabled_) return;
    const std::uint64_t every = std::uint64_t{config_.template_refresh_seconds} * 1000;
    for (auto& t : targets_) {
        if (t.fd < 0) {
            open(t, now);
            continue;
        }
        if (t.templates_due || now - t.templates_sent_ms >= every) send_templates(t, now);
    }
}

}  // namespace dpo::agent
