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
    if (type != 0x0800 || frame.size() < off + 20 || (frame[off] >> 4) != 4) return std::nullopt;
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
    if (!pulled) {
        if (pulled.error() == Refusal::ChunkLimit) {
            ++counters_.chunk_limit;
        } else {
            ++counters_.pool_empty;
            if (table_.chunks_of(subscriber).empty() &&
                std::find(starved_.begin(), starved_.end(), subscriber) == starved_.end()) {
                starved_.push_back(subscriber);
                changed_ = true;
            }
        }
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
    if (!pull(c.subscriber, now)) changed_ = true;
}

void NatManager::connection_end(const Connection& c, Seconds now) {
    const auto id = chunk_of(c);
    if (!id) return;
    const bool was_full = table_.connections(*id) >= config_.chunk_size;
    table_.connection_closed(*id, now);
    // A full newest chunk that frees a port lifts the drop.
    if (was_full && commit_chunk(c.subscriber) == id) changed_ = true;
}

bool NatManager::take_changed() {
    const bool c = changed_;
    changed_ = false;
    return c;
}

void NatManager::resync(const std::vector<Connection>& live, Seconds now) {
    // Held chunks stay held (a chunk released here would skip its log line and its
    // idle time); only the counts start again from what the kernel holds now.
    table_.reset_connections(now);
    for (const Connection& c : live) {
        const auto id = table_.chunk_at(c.public_address, c.public_port);
        if (!id) continue;  // not a translation into our pool
        if (table_.holder(*id) != c.subscriber && !table_.adopt(c.subscriber, *id, now)) {
            ++counters_.unknown_port;
            continue;
        }
        table_.connection_opened(*id);
    }
}

void NatManager::tick(Seconds now) {
    // release_idle's events stay queued for take_events(); a released chunk (now in
    // quarantine) may let the starved try again once it is back.
    const std::size_t free_before = table_.chunks_free();
    (void)table_.release_idle(now);
    if (!starved_.empty() && table_.chunks_free() > free_before) {
        starved_.clear();
        changed_ = true;
    }
}

NatState NatManager::state(int punt_ifindex, const std::string& punt_dev) const {
    NatState s;
    s.punt_ifindex = punt_ifindex;
    s.punt_dev = punt_dev;
    table_.for_each_subscriber([&](const IpAddress& sub) {
        NatSubscriber n{sub, std::nullopt};
        const auto chunks = table_.chunks_of(sub);
        const ChunkId newest = chunks.back();
        // A full newest chunk with no room for another: new connections are dropped.
        const bool full = table_.connections(newest) >= config_.chunk_size &&
                          chunks.size() >= config_.max_chunks_per_subscriber;
        if (!full) n.commit = table_.ports(newest);
        s.subscribers.push_back(n);
    });
    for (const IpAddress& sub : starved_) s.subscribers.push_back({sub, std::nullopt, Refusal::PoolEmpty});
    return s;
}

}  // namespace dpo::nat
