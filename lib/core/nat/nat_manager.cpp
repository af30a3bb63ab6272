// SPDX-License-Identifier: GPL-2.0-or-later
#include "nat_manager.hpp"

#include <algorithm>

namespace dpo::nat {

std::optional<IpAddress> ipv4_source(const std::vector<std::uint8_t>& frame) {
    std::size_t off = 12;  // ethertype
    auto type_at = [&](std::size_t o) { return static_cast<std::uint16_t>((frame[o] << 8) | frame[o + 1]); };
    if (frame.size() < off + 2) return std::nullopt;
    std::uint16_t type = type_at(off);
    if (type == 0x8100 || type == 0x88a8) {
        off += 4;
        if (frame.size() < off + 2) return std::nullopt;
        type = type_at(off);
    }
    off += 2;  // the IPv4 header
    if (type != 0x0800 || frame.size() < off + 20 || (frame[off] >> 4) != 4 || (frame[off] & 0x0f) < 5)
        return std::nullopt;
    return IpAddress::from_bytes(Family::V4, &frame[off + 12]);
}

Result<ChunkId, Refusal> NatManager::first_packet(const IpAddress& subscriber, Seconds now) {
    // A second punted packet of the same subscriber may arrive before its rule did:
    // it already has a chunk, so it needs none more.
    if (auto c = commit_chunk(subscriber)) return *c;
    return pull(subscriber, now);
}

Result<ChunkId, Refusal> NatManager::pull(const IpAddress& subscriber, Seconds now) {
    auto pulled = table_.pull(subscriber, now);
    if (pulled) {
        changed(subscriber);  // a new newest chunk: its rule commits there now
    } else if (pulled.error() == Refusal::ChunkLimit) {
        ++counters_.chunk_limit;
    } else {
        ++counters_.pool_empty;
        // Bounded: spoofed sources by the million must not become a million rules. Past
        // the bound a starved subscriber's first packets are punted (at the punt rule's
        // rate) and refused one by one instead.
        if (table_.chunks_of(subscriber).empty() && starved_.size() < kMaxStarved &&
            starved_.insert(subscriber).second)
            changed(subscriber);
    }
    return pulled;
}

std::optional<ChunkId> NatManager::chunk_of(const Connection& c) const {
    const auto id = table_.chunk_at(c.public_address, c.public_port);
    if (!id || table_.holder(*id) != c.subscriber) return std::nullopt;
    return id;
}

std::optional<ChunkId> NatManager::commit_chunk(const IpAddress& subscriber) const {
    const auto chunks = table_.chunks_of(subscriber);
    if (chunks.empty()) return std::nullopt;
    return chunks.back();
}

void NatManager::connection_new(const Connection& c, Seconds now) {
    const auto id = chunk_of(c);
    if (!id) {
        if (table_.chunk_at(c.public_address, c.public_port)) ++counters_.unknown_port;
        return;
    }
    table_.connection_opened(*id);
    if (commit_chunk(c.subscriber) != id || table_.connections(*id) != config_.chunk_size) return;
    // The chunk new connections go into just filled: the next one, or, at the
    // subscriber's limit, its new connections are dropped from now on.
    if (auto next = pull(c.subscriber, now); !next) {
        changed(c.subscriber);
        refusals_.push_back({c.subscriber, next.error()});
    }
}

void NatManager::connection_end(const Connection& c, Seconds now) {
    const auto id = chunk_of(c);
    if (!id) return;
    const bool was_full = table_.connections(*id) >= config_.chunk_size;
    table_.connection_closed(*id, now);
    // A full newest chunk that frees a port lifts the drop.
    if (was_full && commit_chunk(c.subscriber) == id) changed(c.subscriber);
}

std::vector<IpAddress> NatManager::take_changed() {
    std::vector<IpAddress> out(changed_.begin(), changed_.end());
    changed_.clear();
    return out;
}

void NatManager::resync(const std::vector<Connection>& live, Seconds now) {
    // Held chunks stay held (a chunk released here would skip its log line and its
    // idle time); only the counts start again from what the kernel holds now. Counts
    // decide who is full: every subscriber may have changed (only after an overrun).
    table_.reset_connections(now);
    table_.for_each_subscriber([&](const IpAddress& a) { changed(a); });
    for (const Connection& c : live) {
        const auto id = table_.chunk_at(c.public_address, c.public_port);
        if (!id) continue;  // not a translation into our pool
        if (table_.holder(*id) != c.subscriber) {
            if (!table_.adopt(c.subscriber, *id, now)) {
                ++counters_.unknown_port;
                continue;
            }
            changed(c.subscriber);
        }
        table_.connection_opened(*id);
    }
}

void NatManager::tick(Seconds now) {
    // release_idle's events stay queued for take_events(); a released chunk (now in
    // quarantine) may let the starved try again once it is back.
    const std::size_t free_before = table_.chunks_free();
    for (const auto& e : table_.release_idle(now)) changed(e.subscriber);
    if (!starved_.empty() && table_.chunks_free() > free_before) {
        for (const auto& a : starved_) changed(a);
        starved_.clear();
    }
}

std::optional<NatSubscriber> NatManager::subscriber(const IpAddress& sub) const {
    const auto chunks = table_.chunks_of(sub);
    if (chunks.empty()) {
        if (starved_.count(sub)) return NatSubscriber{sub, std::nullopt, Refusal::PoolEmpty};
        return std::nullopt;
    }
    NatSubscriber n{sub, std::nullopt};
    const ChunkId newest = chunks.back();
    // A full newest chunk with no room for another: new connections are dropped.
    const bool full = table_.connections(newest) >= config_.chunk_size && chunks.size() >= config_.max_chunks_per_subscriber;
    if (!full) n.commit = table_.ports(newest);
    return n;
}

std::vector<IpAddress> NatManager::subscribers() const {
    std::vector<IpAddress> out;
    table_.for_each_subscriber([&](const IpAddress& a) { out.push_back(a); });
    for (const auto& a : starved_)
        if (table_.chunks_of(a).empty()) out.push_back(a);
    return out;
}

NatState NatManager::state(int punt_ifindex, const std::string& punt_dev) const {
    NatState s;
    s.punt_ifindex = punt_ifindex;
    s.punt_dev = punt_dev;
    for (const auto& a : subscribers())
        if (auto n = subscriber(a)) s.subscribers.push_back(*n);
    return s;
}

}  // namespace dpo::nat
