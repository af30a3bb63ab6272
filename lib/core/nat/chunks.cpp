// SPDX-License-Identifier: GPL-2.0-or-later
#include "chunks.hpp"

#include "core/log.hpp"
#include "core/text.hpp"

#include <cassert>
#include <string>

namespace dpo::nat {

const char* to_string(Refusal r) { return r == Refusal::ChunkLimit ? "chunk-limit" : "pool-empty"; }

namespace {
// One record's values; the field list is written out twice below because core/log
// takes its fields as a braced list.
struct Record {
    const char* event;
    std::string when, subscriber, address, ports;
};

Record record(const ChunkEvent& e, std::int64_t unix_seconds) {
    return {e.kind == ChunkEvent::Kind::Allocated ? "chunk-allocated" : "chunk-released", utc_iso8601(unix_seconds),
            e.subscriber.str(), e.ports.address.str(), std::to_string(e.ports.first) + "-" + std::to_string(e.ports.last)};
}
}  // namespace

std::string log_line(const ChunkEvent& e, std::int64_t unix_seconds) {
    const Record r = record(e, unix_seconds);
    return log::format(log::Level::Notice, r.event,
                       {{"time", r.when}, {"subscriber", r.subscriber}, {"public", r.address}, {"ports", r.ports}});
}

void log_event(const ChunkEvent& e, std::int64_t unix_seconds) {
    const Record r = record(e, unix_seconds);
    log::write(log::Level::Notice, r.event,
               {{"time", r.when}, {"subscriber", r.subscriber}, {"public", r.address}, {"ports", r.ports}});
}

std::uint32_t ChunkTable::key(const IpAddress& a) { return a.v4_host_order(); }

ChunkTable::ChunkTable(const Nat& config) : config_(config), per_address_(config.chunks_per_address()) {
    assert(per_address_ > 0 && per_address_ <= 0xffff);  // the loader guarantees it
    for (const IpPrefix& p : config.pool) {
        const std::uint32_t base = p.address.v4_host_order();
        for (std::uint64_t i = 0; i < p.address_count(); ++i)
            pool_.push_back(IpAddress::v4(base + static_cast<std::uint32_t>(i)));
    }
    addresses_.resize(pool_.size());
    for (std::uint32_t a = 0; a < pool_.size(); ++a) ring_insert(a);
}

std::uint16_t ChunkTable::free_count(std::uint32_t a) const {
    const Address& s = addresses_[a];
    return static_cast<std::uint16_t>(per_address_ - s.fresh + s.recycled.size());
}

std::size_t ChunkTable::chunks_free() const {
    std::size_t n = 0;
    for (std::uint32_t a = 0; a < addresses_.size(); ++a) n += free_count(a);
    return n;
}

std::vector<ChunkTable::AddressUse> ChunkTable::pool_use() const {
    std::vector<AddressUse> out(pool_.size());
    for (std::uint32_t a = 0; a < pool_.size(); ++a) {
        out[a].address = pool_[a];
        out[a].chunks = per_address_;
        out[a].free = free_count(a);
    }
    held_.for_each([&](ChunkId id, const Held&) { ++out[id / per_address_].held; });
    for (auto& u : out) u.quarantined = u.chunks - u.held - u.free;
    return out;
}

void ChunkTable::ring_insert(std::uint32_t a) {
    Address& s = addresses_[a];
    if (s.in_ring) return;
    s.in_ring = true;
    if (ring_size_++ == 0) {
        s.prev = s.next = a;
        ring_head_ = a;
        return;
    }
    // Just behind the head: it is served last in the current round.
    const std::uint32_t tail = addresses_[ring_head_].prev;
    s.prev = tail;
    s.next = ring_head_;
    addresses_[tail].next = a;
    addresses_[ring_head_].prev = a;
}

void ChunkTable::ring_remove(std::uint32_t a) {
    Address& s = addresses_[a];
    if (!s.in_ring) return;
    s.in_ring = false;
    if (--ring_size_ == 0) return;
    addresses_[s.prev].next = s.next;
    addresses_[s.next].prev = s.prev;
    if (ring_head_ == a) ring_head_ = s.next;
}

std::optional<std::uint16_t> ChunkTable::take_free(std::uint32_t a) {
    Address& s = addresses_[a];
    std::optional<std::uint16_t> index;
    if (s.fresh < per_address_) {
        index = s.fresh++;  // never used before: the longest unused of all
    } else if (!s.recycled.empty()) {
        // Out of quarantine, so unused for at least kQuarantineSeconds.
        index = s.recycled.back();
        s.recycled.pop_back();
    }
    if (free_count(a) == 0) ring_remove(a);
    return index;
}

void ChunkTable::expire_quarantine(Seconds now) {
    // Released chunks enter in time order with the same delay: the front is oldest.
    while (!quarantine_.empty() && quarantine_.front().second <= now) {
        const ChunkId id = quarantine_.front().first;
        quarantine_.pop_front();
        const std::uint32_t a = id / per_address_;
        addresses_[a].recycled.push_back(static_cast<std::uint16_t>(id % per_address_));
        ring_insert(a);
    }
}

void ChunkTable::hold(std::uint32_t subscriber, std::uint32_t address, ChunkId id, Seconds now, bool log) {
    held_.try_emplace(id, Held{subscriber, kNone, 0, static_cast<std::uint32_t>(now)});
    auto [s, fresh] = subscribers_.try_emplace(subscriber, Subscriber{address, id, id, 0});
    if (!fresh) {
        held_.at(s->last).next_of_subscriber = id;
        s->last = id;
    }
    ++s->count;
    if (log) events_.push_back({ChunkEvent::Kind::Allocated, now, IpAddress::v4(subscriber), ports(id)});
}

Result<ChunkId, Refusal> ChunkTable::pull(const IpAddress& subscriber, Seconds now) {
    expire_quarantine(now);
    const std::uint32_t k = key(subscriber);
    const Subscriber* sub = subscribers_.find(k);
    std::uint32_t address;
    if (sub) {
        if (sub->count >= config_.max_chunks_per_subscriber) return fail(Refusal::ChunkLimit);
        address = sub->address;  // paired pooling: same address or nothing
    } else {
        if (ring_size_ == 0) return fail(Refusal::PoolEmpty);
        address = ring_head_;
        ring_head_ = addresses_[ring_head_].next;  // round-robin across addresses
    }
    const auto index = take_free(address);
    if (!index) return fail(Refusal::PoolEmpty);
    const ChunkId id = address * per_address_ + *index;
    hold(k, address, id, now, true);
    return id;
}

Result<Done> ChunkTable::adopt(const IpAddress& subscriber, ChunkId id, Seconds now) {
    if (id / per_address_ >= addresses_.size()) return fail("chunk " + std::to_string(id) + " is not in the pool");
    if (const auto h = holder(id)) return fail("chunk " + std::to_string(id) + " is already held by " + h->str());
    const std::uint32_t k = key(subscriber);
    const std::uint32_t address = id / per_address_;
    const Subscriber* sub = subscribers_.find(k);
    if (sub && sub->address != address)
        return fail(subscriber.str() + " already holds chunks on " + pool_[sub->address].str() +
                    ": paired pooling allows one address");
    if (sub && sub->count >= config_.max_chunks_per_subscriber)
        return fail(subscriber.str() + " already holds its " + std::to_string(config_.max_chunks_per_subscriber) +
                    " chunks");
    // Take it out of the free set: fresh chunks below the watermark are implicit,
    // so move the watermark and recycle the ones skipped over.
    Address& s = addresses_[address];
    const auto index = static_cast<std::uint16_t>(id % per_address_);
    if (index >= s.fresh) {
        for (std::uint16_t i = s.fresh; i < index; ++i) s.recycled.push_back(i);
        s.fresh = static_cast<std::uint16_t>(index + 1);
    } else {
        std::erase(s.recycled, index);
    }
    if (free_count(address) == 0) ring_remove(address);
    hold(k, address, id, now, false);
    return Done{};
}

void ChunkTable::reset_connections(Seconds now) {
    std::vector<ChunkId> ids;
    held_.for_each([&](ChunkId id, const Held&) { ids.push_back(id); });
    for (ChunkId id : ids) {
        Held& h = held_.at(id);
        h.connections = 0;
        h.idle_since = static_cast<std::uint32_t>(now);
    }
}

void ChunkTable::connection_opened(ChunkId id) {
    if (Held* h = held_.find(id)) ++h->connections;
}

void ChunkTable::connection_closed(ChunkId id, Seconds now) {
    Held* h = held_.find(id);
    if (!h || h->connections == 0) return;
    if (--h->connections == 0) h->idle_since = static_cast<std::uint32_t>(now);
}

void ChunkTable::release(ChunkId id, Seconds now) {
    const Held h = held_.at(id);
    Subscriber& s = subscribers_.at(h.subscriber);
    // Unlink from the subscriber's list (short: at most max_chunks_per_subscriber).
    if (s.first == id) {
        s.first = h.next_of_subscriber;
    } else {
        ChunkId prev = s.first;
        while (held_.at(prev).next_of_subscriber != id) prev = held_.at(prev).next_of_subscriber;
        held_.at(prev).next_of_subscriber = h.next_of_subscriber;
        if (s.last == id) s.last = prev;
    }
    events_.push_back({ChunkEvent::Kind::Released, now, IpAddress::v4(h.subscriber), ports(id)});
    held_.erase(id);
    if (--s.count == 0) subscribers_.erase(h.subscriber);
    quarantine_.emplace_back(id, now + kQuarantineSeconds);
}

std::vector<ChunkEvent> ChunkTable::release_idle(Seconds now) {
    std::vector<ChunkId> idle;
    held_.for_each([&](ChunkId id, const Held& h) {
        if (h.connections == 0 && now >= Seconds{h.idle_since} + config_.chunk_idle_seconds) idle.push_back(id);
    });
    const std::size_t before = events_.size();
    for (ChunkId id : idle) release(id, now);
    expire_quarantine(now);
    return {events_.begin() + static_cast<std::ptrdiff_t>(before), events_.end()};
}

ChunkPorts ChunkTable::ports(ChunkId id) const {
    const std::uint32_t index = id % per_address_;
    const auto first = static_cast<std::uint16_t>(config_.ports.first + index * config_.chunk_size);
    return {pool_[id / per_address_], first, static_cast<std::uint16_t>(first + config_.chunk_size - 1)};
}

std::optional<ChunkId> ChunkTable::chunk_at(const IpAddress& public_address, std::uint16_t port) const {
    if (public_address.family != Family::V4 || port < config_.ports.first) return std::nullopt;
    const std::uint32_t index = (port - config_.ports.first) / config_.chunk_size;
    if (index >= per_address_) return std::nullopt;
    const std::uint32_t a = key(public_address);
    // Pool addresses are contiguous per prefix: find the prefix, then the offset.
    std::uint32_t base = 0;
    for (const IpPrefix& p : config_.pool) {
        if (p.contains(public_address)) return (base + (a - key(p.address))) * per_address_ + index;
        base += static_cast<std::uint32_t>(p.address_count());
    }
    return std::nullopt;
}

std::vector<ChunkId> ChunkTable::chunks_of(const IpAddress& subscriber) const {
    std::vector<ChunkId> out;
    const Subscriber* s = subscribers_.find(key(subscriber));
    if (!s) return out;
    for (ChunkId id = s->first; id != kNone; id = held_.at(id).next_of_subscriber) out.push_back(id);
    return out;
}

std::optional<IpAddress> ChunkTable::holder(ChunkId id) const {
    const Held* h = held_.find(id);
    if (!h) return std::nullopt;
    return IpAddress::v4(h->subscriber);
}

std::uint32_t ChunkTable::connections(ChunkId id) const {
    const Held* h = held_.find(id);
    return h ? h->connections : 0;
}

std::vector<ChunkEvent> ChunkTable::take_events() {
    std::vector<ChunkEvent> out;
    out.swap(events_);
    return out;
}

}  // namespace dpo::nat
