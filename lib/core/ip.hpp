// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Plain value types for IP addresses and prefixes, shared by the mapping file,
// the kernel model and (later) the rule compiler. No netlink in here.

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "result.hpp"

namespace dpo {

// An Ethernet address, in wire order.
using Mac = std::array<std::uint8_t, 6>;
std::string mac_str(const Mac& m);

enum class Family : std::uint8_t { V4 = 4, V6 = 6 };

struct IpAddress {
    Family family = Family::V4;
    // Network byte order; a V4 address uses the first 4 bytes, the rest stay zero
    // so that == and <=> can compare the whole array.
    std::array<std::uint8_t, 16> bytes{};

    static std::optional<IpAddress> parse(std::string_view text);
    static IpAddress v4(std::uint32_t host_order);
    // The inverse of v4(): a V4 address as a number (host order).
    std::uint32_t v4_host_order() const;
    static IpAddress from_bytes(Family f, const void* data);

    std::size_t size() const { return family == Family::V4 ? 4 : 16; }
    std::string str() const;

    // Not usable as a tunnel endpoint or a NAT pool member: unspecified,
    // loopback, multicast, IPv4 limited broadcast.
    bool is_special() const;

    auto operator<=>(const IpAddress&) const = default;
};

struct IpPrefix {
    IpAddress address;
    std::uint8_t length = 0;

    // "a.b.c.d/len" or "x::y/len"; a bare address is a host prefix.
    static std::optional<IpPrefix> parse(std::string_view text);

    std::string str() const;
    bool contains(const IpAddress& a) const;
    bool overlaps(const IpPrefix& other) const;
    // True when no bit beyond `length` is set, as routing tables require.
    bool is_canonical() const;
    std::uint64_t address_count() const;  // saturates at 2^63 for IPv6

    auto operator<=>(const IpPrefix&) const = default;
};

}  // namespace dpo
