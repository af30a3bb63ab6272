// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Port chunks of the carrier-grade NAT (SPEC.md, "NAT: port chunks"), as a pure
// table: who holds which `chunk_size` ports on which public address, how many
// connections each chunk carries, and when it may go back to the pool.
//
// - Paired pooling: all of a subscriber's chunks sit on one public address.
// - At most max_chunks_per_subscriber chunks; beyond that: refused (ChunkLimit).
// - A chunk idle (no connection) for chunk_idle_seconds is released; its ports
//   stay out of use for kQuarantineSeconds more (RFC 6888 REQ-8).
// - Every operation is O(1) (amortised); nothing is kept per free chunk.
// Time is passed in (seconds on a monotonic clock), so tests need no clock.

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "core/mapping.hpp"
#include "core/nat/flat_map.hpp"
#include "core/result.hpp"

namespace dpo::nat {

using Seconds = std::uint64_t;
inline constexpr Seconds kQuarantineSeconds = 120;

// address index * chunks per address + chunk index within the address.
using ChunkId = std::uint32_t;

struct ChunkPorts {
    IpAddress address;
    std::uint16_t first = 0, last = 0;
    bool operator==(const ChunkPorts&) const = default;
};

enum class Refusal : std::uint8_t { ChunkLimit, PoolEmpty };
const char* to_string(Refusal r);

// One allocation or release, for the log line an operator keeps.
struct ChunkEvent {
    enum class Kind : std::uint8_t { Allocated, Released } kind;
    Seconds at;
    IpAddress subscriber;
    ChunkPorts ports;
};

// The line an operator keeps to answer "who had 198.51.100.3:4711 at 14:02":
// "<5>chunk-allocated time=2026-11-23T14:02:11Z subscriber=10.100.0.2
// public=198.51.100.3 ports=4608-5119". `unix_seconds` is the wall clock at the event.
std::string log_line(const ChunkEvent& e, std::int64_t unix_seconds);
// The same record written through core/log, so that under systemd it reaches the journal
// with its fields (`journalctl EVENT=chunk-allocated SUBSCRIBER=10.100.0.2`).
void log_event(const ChunkEvent& e, std::int64_t unix_seconds);

class ChunkTable {
public:
    explicit ChunkTable(const Nat& config);

    // The subscriber's next chunk, on its public address (or, for its first chunk,
    // on the next address with a free chunk, round-robin).
    Result<ChunkId, Refusal> pull(const IpAddress& subscriber, Seconds now);
    // Takes a chunk found on restart (conntrack or installed rules) as held. Not an
    // allocation: the run that allocated it logged it, so no event.
    Result<Done> adopt(const IpAddress& subscriber, ChunkId id, Seconds now);

    // Forgets every connection count (the chunks stay held, idle from `now`): before
    // counting again from a conntrack dump after an overrun.
    void reset_connections(Seconds now);
    void connection_opened(ChunkId id);
    void connection_closed(ChunkId id, Seconds now);
    // Releases every chunk idle for chunk_idle_seconds; returns the events.
    std::vector<ChunkEvent> release_idle(Seconds now);

    ChunkPorts ports(ChunkId id) const;
    std::optional<ChunkId> chunk_at(const IpAddress& public_address, std::uint16_t port) const;
    // The subscriber's chunks, oldest first (empty if none).
    std::vector<ChunkId> chunks_of(const IpAddress& subscriber) const;
    std::optional<IpAddress> holder(ChunkId id) const;
    std::uint32_t connections(ChunkId id) const;

    std::size_t subscribers() const { return subscribers_.size(); }
    template <class Fn>
    void for_each_subscriber(Fn fn) const {
        subscribers_.for_each([&](std::uint32_t key, const Subscriber&) { fn(IpAddress::v4(key)); });
    }
    std::size_t chunks_held() const { return held_.size(); }
    std::size_t table_bytes() const { return held_.bytes() + subscribers_.bytes(); }
    std::size_t chunks_free() const;  // ready now, not counting quarantine
    // Each public address of the pool and what of it is in use. O(addresses + chunks held).
    struct AddressUse {
        IpAddress address;
        std::uint32_t chunks = 0;       // whole chunks on it
        std::uint32_t held = 0;         // held by subscribers
        std::uint32_t free = 0;         // ready to be handed out
        std::uint32_t quarantined = 0;  // released, not yet ready (kQuarantineSeconds)
    };
    std::vector<AddressUse> pool_use() const;
    std::uint32_t chunks_per_address() const { return per_address_; }
    std::vector<ChunkEvent> take_events();

private:
    struct Address {
        std::uint16_t fresh = 0;                 // chunks [fresh, per_address) never used yet
        std::vector<std::uint16_t> recycled;     // released and out of quarantine
        std::uint32_t prev = 0, next = 0;        // ring of addresses with a free chunk
        bool in_ring = false;
    };
    // 16 bytes per held chunk and per subscriber: 100k subscribers fit in a few MiB.
    struct Held {
        std::uint32_t subscriber = 0;    // IPv4, host order
        ChunkId next_of_subscriber = 0;  // intrusive list of a subscriber's chunks; kNone ends it
        std::uint32_t connections = 0;
        std::uint32_t idle_since = 0;    // seconds, when connections last dropped to 0
    };
    struct Subscriber {
        std::uint32_t address = 0;  // index into addresses_
        ChunkId first = 0;          // oldest chunk
        ChunkId last = 0;           // newest chunk
        std::uint32_t count = 0;
    };
    static constexpr ChunkId kNone = 0xffffffffu;

    std::uint16_t free_count(std::uint32_t a) const;
    std::optional<std::uint16_t> take_free(std::uint32_t a);
    void ring_insert(std::uint32_t a);
    void ring_remove(std::uint32_t a);
    void expire_quarantine(Seconds now);
    void hold(std::uint32_t subscriber, std::uint32_t address, ChunkId id, Seconds now, bool log);
    void release(ChunkId id, Seconds now);
    static std::uint32_t key(const IpAddress& a);

    Nat config_;
    std::uint32_t per_address_;
    std::vector<IpAddress> pool_;
    std::vector<Address> addresses_;
    std::uint32_t ring_head_ = 0;
    std::size_t ring_size_ = 0;
    std::deque<std::pair<ChunkId, Seconds>> quarantine_;  // released, ready at .second
    FlatMap<Held> held_;
    FlatMap<Subscriber> subscribers_;
    std::vector<ChunkEvent> events_;
};

}  // namespace dpo::nat
