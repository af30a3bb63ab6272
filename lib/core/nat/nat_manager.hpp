// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The daemon's NAT decisions, pure: which subscriber gets which chunk when, which
// chunk new connections are committed into, when chunks go idle. Fed with first
// packets (from the punt path), conntrack events and the time; read back, one
// subscriber at a time, by the compiler (through nat::NatView) and as chunk events for
// the log. It says which subscribers changed, so that only their rules are compiled
// again. No I/O here.

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/nat/state.hpp"
#include "core/nat/chunks.hpp"

namespace dpo::nat {

// A translated connection as conntrack reports it: its subscriber (original
// source) and the public address:port it was translated to (reply destination).
struct Connection {
    IpAddress subscriber;
    IpAddress public_address;
    std::uint16_t public_port = 0;
};

// The IPv4 source of a punted Ethernet frame (802.1Q tag optional), if it has one.
std::optional<IpAddress> ipv4_source(const std::vector<std::uint8_t>& frame);

class NatManager {
public:
    explicit NatManager(const Nat& config) : config_(config), table_(config) {}

    // A subscriber's first packet found no rule: give it a chunk. Refused when it is
    // at its limit or the pool is out of chunks (the caller drops and counts).
    Result<ChunkId, Refusal> first_packet(const IpAddress& subscriber, Seconds now);

    // Counting connections per chunk. A connection on the chunk new connections are
    // committed into that fills it pulls the subscriber's next chunk, ahead of need:
    // when a chunk is full the kernel's NAT finds no free port and drops.
    void connection_new(const Connection& c, Seconds now);
    void connection_end(const Connection& c, Seconds now);
    // After a restart or an overrun: the connections the conntrack table holds now.
    // Chunks not yet held are adopted; counts are rebuilt from scratch.
    void resync(const std::vector<Connection>& live, Seconds now);
    // Releases idle chunks (call about once a second).
    void tick(Seconds now);

    // What the compiler reads of one subscriber: the chunk its new connections go into,
    // or why they are dropped; nothing for an address that is no subscriber.
    std::optional<NatSubscriber> subscriber(const IpAddress& a) const;
    std::vector<IpAddress> subscribers() const;
    // The whole state at once (tests, --show's comparison).
    NatState state(int punt_ifindex, const std::string& punt_dev) const;
    // The subscribers whose subscriber() may have changed since the last call.
    std::vector<IpAddress> take_changed();
    std::vector<ChunkEvent> take_events() { return table_.take_events(); }
    // Refusals of a chunk pulled ahead of need (a connection filled the last chunk a
    // subscriber may hold, or the pool had none): no first packet waits on them, so no
    // caller hears of them otherwise; the quota-exceeded events of RFC 8158.
    struct Refused {
        IpAddress subscriber;
        Refusal why;
    };
    std::vector<Refused> take_refusals() { return std::exchange(refusals_, {}); }
    const ChunkTable& table() const { return table_; }

    struct Counters {
        std::uint64_t chunk_limit = 0;  // a subscriber at max_chunks_per_subscriber asked for more
        std::uint64_t pool_empty = 0;   // no chunk left for it
        std::uint64_t unknown_port = 0; // a connection on a pool address outside every held chunk
    };
    const Counters& counters() const { return counters_; }

private:
    Result<ChunkId, Refusal> pull(const IpAddress& subscriber, Seconds now);
    std::optional<ChunkId> chunk_of(const Connection& c) const;
    // The chunk new connections of `subscriber` go into: its newest.
    std::optional<ChunkId> commit_chunk(const IpAddress& subscriber) const;

    void changed(const IpAddress& a) { changed_.insert(a); }

    Nat config_;
    ChunkTable table_;
    Counters counters_;
    std::set<IpAddress> changed_;
    // Subscribers refused for want of a chunk: their new connections are dropped by a
    // rule instead of being punted one by one, until a chunk goes back to the pool.
    std::set<IpAddress> starved_;
    std::vector<Refused> refusals_;  // bounded: one per chunk filled, between two take_refusals()

public:
    // Starved subscribers with a drop rule of their own, at most.
    static constexpr std::size_t kMaxStarved = 4096;
};

}  // namespace dpo::nat
