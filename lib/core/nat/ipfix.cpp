// SPDX-License-Identifier: GPL-2.0-or-later
#include "ipfix.hpp"

#include <cassert>
#include <utility>

namespace dpo::nat::ipfix {

namespace {

struct Field {
    std::uint16_t id, length;
};

// RFC 8158's templates, the fields its tables mark mandatory, in its order.
constexpr Field kPortBlockFields[] = {{ie::kObservationTimeMilliseconds, 8}, {ie::kNatEvent, 1},
                                      {ie::kSourceIPv4Address, 4},           {ie::kPostNatSourceIPv4Address, 4},
                                      {ie::kPortRangeStart, 2},              {ie::kPortRangeEnd, 2}};
constexpr Field kQuotaFields[] = {{ie::kObservationTimeMilliseconds, 8},
                                  {ie::kNatEvent, 1},
                                  {ie::kNatQuotaExceededEvent, 4},
                                  {ie::kMaxEntriesPerUser, 4},
                                  {ie::kSourceIPv4Address, 4}};
constexpr Field kExhaustedFields[] = {{ie::kObservationTimeMilliseconds, 8}, {ie::kNatEvent, 1}, {ie::kNatPoolId, 4}};

template <std::size_t N>
constexpr std::size_t width(const Field (&fields)[N]) {
    std::size_t n = 0;
    for (const auto& f : fields) n += f.length;
    return n;
}

class Writer {
public:
    explicit Writer(std::vector<std::uint8_t>& out) : out_(out) {}
    void u8(std::uint8_t v) { out_.push_back(v); }
    void u16(std::uint16_t v) {
        u8(static_cast<std::uint8_t>(v >> 8));
        u8(static_cast<std::uint8_t>(v));
    }
    void u32(std::uint32_t v) {
        u16(static_cast<std::uint16_t>(v >> 16));
        u16(static_cast<std::uint16_t>(v));
    }
    void u64(std::uint64_t v) {
        u32(static_cast<std::uint32_t>(v >> 32));
        u32(static_cast<std::uint32_t>(v));
    }
    void v4(const IpAddress& a) {
        for (int i = 0; i < 4; ++i) u8(a.bytes[static_cast<std::size_t>(i)]);
    }

private:
    std::vector<std::uint8_t>& out_;
};

void put16(std::vector<std::uint8_t>& b, std::size_t at, std::size_t v) {
    b[at] = static_cast<std::uint8_t>(v >> 8);
    b[at + 1] = static_cast<std::uint8_t>(v);
}

std::uint16_t template_of(const Record& r) {
    switch (r.index()) {
        case 0: return kTemplatePortBlock;
        case 1: return kTemplateQuotaExceeded;
        default: return kTemplateAddressesExhausted;
    }
}

template <std::size_t N>
void template_record(Writer& w, std::uint16_t id, const Field (&fields)[N]) {
    w.u16(id);
    w.u16(static_cast<std::uint16_t>(N));
    for (const auto& f : fields) {
        w.u16(f.id);
        w.u16(f.length);
    }
}

void template_set(std::vector<std::uint8_t>& out) {
    const std::size_t start = out.size();
    Writer w(out);
    w.u16(kTemplateSetId);
    w.u16(0);  // length, below
    template_record(w, kTemplatePortBlock, kPortBlockFields);
    template_record(w, kTemplateQuotaExceeded, kQuotaFields);
    template_record(w, kTemplateAddressesExhausted, kExhaustedFields);
    put16(out, start + 2, out.size() - start);
}

constexpr std::size_t kTemplateSetBytes =
    4 + (4 + 4 * std::size(kPortBlockFields)) + (4 + 4 * std::size(kQuotaFields)) + (4 + 4 * std::size(kExhaustedFields));

void data_record(Writer& w, const Record& r) {
    if (const auto* p = std::get_if<PortBlock>(&r)) {
        w.u64(p->time_ms);
        w.u8(static_cast<std::uint8_t>(p->allocated ? NatEvent::PortBlockAllocation : NatEvent::PortBlockDeallocation));
        w.v4(p->subscriber);
        w.v4(p->public_address);
        w.u16(p->first);
        w.u16(p->last);
    } else if (const auto* q = std::get_if<QuotaExceeded>(&r)) {
        w.u64(q->time_ms);
        w.u8(static_cast<std::uint8_t>(NatEvent::QuotaExceeded));
        w.u32(kQuotaMaxEntriesPerUser);
        w.u32(q->max_entries);
        w.v4(q->subscriber);
    } else {
        const auto& x = std::get<AddressesExhausted>(r);
        w.u64(x.time_ms);
        w.u8(static_cast<std::uint8_t>(NatEvent::AddressesExhausted));
        w.u32(x.pool_id);
    }
}

void header(std::vector<std::uint8_t>& out, std::uint32_t export_time, std::uint32_t sequence, std::uint32_t domain) {
    Writer w(out);
    w.u16(kVersion);
    w.u16(0);  // length, when the message is complete
    w.u32(export_time);
    w.u32(sequence);
    w.u32(domain);
}

}  // namespace

Record record(const ChunkEvent& e, std::uint64_t time_ms) {
    return PortBlock{e.kind == ChunkEvent::Kind::Allocated, time_ms, e.subscriber, e.ports.address, e.ports.first,
                     e.ports.last};
}

Record record(Refusal why, const IpAddress& subscriber, std::uint32_t max_chunks, std::uint64_t time_ms) {
    if (why == Refusal::ChunkLimit) return QuotaExceeded{time_ms, subscriber, max_chunks};
    return AddressesExhausted{time_ms, kPoolId};
}

std::size_t record_bytes(const Record& r) {
    switch (r.index()) {
        case 0: return width(kPortBlockFields);
        case 1: return width(kQuotaFields);
        default: return width(kExhaustedFields);
    }
}

std::vector<std::vector<std::uint8_t>> Stream::encode(std::span<const Record> records, std::uint32_t export_time,
                                                      bool with_templates) {
    std::vector<std::vector<std::uint8_t>> messages;
    std::size_t i = 0;
    bool templates_due = with_templates;
    while (i < records.size()) {
        auto& m = messages.emplace_back();
        m.reserve(kMaxMessageBytes);
        header(m, export_time, sequence_, domain_);
        if (std::exchange(templates_due, false)) template_set(m);
        std::uint32_t in_message = 0;
        std::size_t set_start = 0;
        std::uint16_t set_id = 0;
        while (i < records.size()) {
            const std::uint16_t id = template_of(records[i]);
            const bool new_set = set_id != id;
            const std::size_t need = record_bytes(records[i]) + (new_set ? 4 : 0);
            if (m.size() + need > kMaxMessageBytes) break;
            if (new_set) {
                if (set_id) put16(m, set_start + 2, m.size() - set_start);
                set_start = m.size();
                set_id = id;
                Writer w(m);
                w.u16(id);
                w.u16(0);
            }
            Writer w(m);
            data_record(w, records[i]);
            ++in_message;
            ++i;
        }
        assert(in_message > 0);  // one record always fits an empty message
        put16(m, set_start + 2, m.size() - set_start);
        put16(m, 2, m.size());
        sequence_ += in_message;  // wraps mod 2^32, as RFC 7011 counts
    }
    return messages;
}

std::vector<std::uint8_t> Stream::templates(std::uint32_t export_time) const {
    std::vector<std::uint8_t> m;
    m.reserve(kHeaderBytes + kTemplateSetBytes);
    header(m, export_time, sequence_, domain_);
    template_set(m);
    put16(m, 2, m.size());
    return m;
}

}  // namespace dpo::nat::ipfix
