// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// NAT events as IPFIX (RFC 7011) messages, with RFC 8158's templates: the bytes an
// exporter sends to one collector, and nothing else (no socket, no clock: time is
// passed in). docs/nat-logging.md describes what a collector receives.
//
// One Stream per collector: RFC 7011 counts sequence numbers per Transport Session
// and Observation Domain, so each collector sees its own gap-free numbering.

#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "core/ip.hpp"
#include "core/nat/chunks.hpp"

namespace dpo::nat::ipfix {

// IANA "IPFIX Information Elements" registry.
namespace ie {
inline constexpr std::uint16_t kSourceIPv4Address = 8;
inline constexpr std::uint16_t kPostNatSourceIPv4Address = 225;
inline constexpr std::uint16_t kNatEvent = 230;
inline constexpr std::uint16_t kNatPoolId = 283;
inline constexpr std::uint16_t kObservationTimeMilliseconds = 323;
inline constexpr std::uint16_t kPortRangeStart = 361;
inline constexpr std::uint16_t kPortRangeEnd = 362;
inline constexpr std::uint16_t kNatQuotaExceededEvent = 466;
inline constexpr std::uint16_t kMaxEntriesPerUser = 473;
}  // namespace ie

// natEvent values (RFC 8158, IANA "natEvent" registry).
enum class NatEvent : std::uint8_t {
    AddressesExhausted = 3,
    QuotaExceeded = 13,
    PortBlockAllocation = 16,
    PortBlockDeallocation = 17,
};
// natQuotaExceededEvent value (RFC 8158): "Maximum entries per user", the entries
// here being port blocks; IANA's value 4 is "maximum active hosts or subscribers".
inline constexpr std::uint32_t kQuotaMaxEntriesPerUser = 3;

// Template IDs: 256 and up are free for data templates (RFC 7011, 3.4.1).
inline constexpr std::uint16_t kTemplatePortBlock = 256;
inline constexpr std::uint16_t kTemplateQuotaExceeded = 257;
inline constexpr std::uint16_t kTemplateAddressesExhausted = 258;

inline constexpr std::uint16_t kVersion = 10;
inline constexpr std::uint16_t kTemplateSetId = 2;
inline constexpr std::size_t kHeaderBytes = 16;
// Messages stay below this, UDP payload included, so that no path MTU fragments them
// (RFC 7011, 10.3.3: a message must fit one datagram, better without fragments).
inline constexpr std::size_t kMaxMessageBytes = 1400;

// natEvent 16 / 17: a chunk of ports on a public address given to, or taken back
// from, a subscriber.
struct PortBlock {
    bool allocated = true;
    std::uint64_t time_ms = 0;  // wall clock, ms since the epoch
    IpAddress subscriber;       // IPv4
    IpAddress public_address;   // IPv4
    std::uint16_t first = 0, last = 0;
    bool operator==(const PortBlock&) const = default;
};
// natEvent 13: a subscriber at max_chunks_per_subscriber asked for one more.
struct QuotaExceeded {
    std::uint64_t time_ms = 0;
    IpAddress subscriber;
    std::uint32_t max_entries = 0;  // the limit it hit
    bool operator==(const QuotaExceeded&) const = default;
};
// natEvent 3: no chunk left in the pool for a subscriber's first one.
struct AddressesExhausted {
    std::uint64_t time_ms = 0;
    std::uint32_t pool_id = 0;
    bool operator==(const AddressesExhausted&) const = default;
};
using Record = std::variant<PortBlock, QuotaExceeded, AddressesExhausted>;

// The mapping has one pool; its natPoolId.
inline constexpr std::uint32_t kPoolId = 1;

Record record(const ChunkEvent& e, std::uint64_t time_ms);
Record record(Refusal why, const IpAddress& subscriber, std::uint32_t max_chunks, std::uint64_t time_ms);

// Encoded size of one data record of its template.
std::size_t record_bytes(const Record& r);

class Stream {
public:
    explicit Stream(std::uint32_t observation_domain) : domain_(observation_domain) {}

    // The records, in order, in as many messages as kMaxMessageBytes needs; the first
    // carries the templates ahead of the data when `with_templates`. Every record
    // counts towards later messages' sequence numbers, sent or not: a collector then
    // sees a loss as a gap.
    std::vector<std::vector<std::uint8_t>> encode(std::span<const Record> records, std::uint32_t export_time,
                                                  bool with_templates);
    // A message with the templates alone (the periodic refresh).
    std::vector<std::uint8_t> templates(std::uint32_t export_time) const;

    std::uint32_t sequence() const { return sequence_; }  // data records counted so far, mod 2^32
    std::uint32_t observation_domain() const { return domain_; }

private:
    std::uint32_t domain_;
    std::uint32_t sequence_ = 0;
};

}  // namespace dpo::nat::ipfix
