// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The IPFIX exporter of NAT events (docs/nat-logging.md): one connected, non-blocking
// UDP socket per collector of `nat.logging`, fed by the NAT stage's chunk events and
// refusals; the bytes come from the pure nat::ipfix::Stream. It never blocks the loop:
// a datagram the kernel will not take now is lost, counted, and told at most once a
// minute per collector (the collector sees the gap in the sequence numbers).

#include <cstdint>
#include <optional>
#include <vector>

#include "core/mapping.hpp"
#include "core/nat/chunks.hpp"
#include "core/nat/ipfix.hpp"

namespace dpo::agent {

class IpfixExporter {
public:
    IpfixExporter() = default;
    IpfixExporter(const IpfixExporter&) = delete;
    IpfixExporter& operator=(const IpfixExporter&) = delete;
    ~IpfixExporter();

    // Takes `nat.logging` at start and on every reload: a collector kept keeps its
    // socket and its sequence numbers; a new one is connected and sent the templates;
    // one no longer listed is closed. Nothing (no `nat` or no `logging`): no export.
    void configure(const std::optional<NatLogging>& config, std::uint64_t wall_ms);

    void chunk_events(const std::vector<nat::ChunkEvent>& events, std::uint64_t wall_ms);
    void refusal(nat::Refusal why, const IpAddress& subscriber, std::uint32_t max_chunks, std::uint64_t wall_ms);
    // About once a second: the periodic template refresh, and sockets that failed to
    // open are tried again.
    void tick(std::uint64_t wall_ms);

    struct Counters {
        std::uint64_t messages = 0;     // datagrams the kernel took, all collectors
        std::uint64_t records = 0;      // data records in them
        std::uint64_t send_errors = 0;  // datagrams lost (refused, no route, buffer full, no socket)
    };
    const Counters& counters() const { return counters_; }

    // The wall clock in ms since the epoch, as observationTimeMilliseconds wants it.
    static std::uint64_t wall_ms();

    // A failing collector is told about at most this often.
    static constexpr std::uint64_t kErrorLogIntervalMs = 60'000;

private:
    struct Target {
        Collector where;
        nat::ipfix::Stream stream;
        int fd = -1;
        bool templates_due = true;          // before the next data: after a (re)connect or an error
        std::uint64_t templates_sent_ms = 0;
        std::uint64_t failed = 0;           // datagrams lost since the last line about it
        std::uint64_t told_ms = 0;          // when that line was written; 0: never
        bool told_once = false;
    };

    void open(Target& t, std::uint64_t now);
    void close(Target& t);
    void send_records(const std::vector<nat::ipfix::Record>& records, std::uint64_t now);
    bool send(Target& t, const std::vector<std::uint8_t>& message, std::uint64_t now, std::size_t records);
    void send_templates(Target& t, std::uint64_t now);
    // `lost`: a datagram was dropped (not just a socket that would not open).
    void failed(Target& t, int error, std::uint64_t now, bool lost);

    NatLogging config_;
    bool enabled_ = false;
    std::vector<Target> targets_;
    Counters counters_;
};

}  // namespace dpo::agent
