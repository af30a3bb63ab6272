// SPDX-License-Identifier: GPL-2.0-or-later
#include "ip.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstdio>
#include <cstring>

namespace dpo {

std::string mac_str(const Mac& m) {
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
    return buf;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
    // inet_pton needs a NUL-terminated string and a bounded length.
    if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
    char buf[INET6_ADDRSTRLEN] = {};
    std::memcpy(buf, text.data(), text.size());
    IpAddress a;
    if (text.find(':') == std::string_view::npos) {
        a.family = Family::V4;
        if (inet_pton(AF_INET, buf, a.bytes.data()) != 1) return std::nullopt;
    } else {
        a.family = Family::V6;
        if (inet_pton(AF_INET6, buf, a.bytes.data()) != 1) return std::nullopt;
    }
    return a;
}

std::uint32_t IpAddress::v4_host_order() const {
    return (std::uint32_t{bytes[0]} << 24) | (std::uint32_t{bytes[1]} << 16) | (std::uint32_t{bytes[2]} << 8) | bytes[3];
}

IpAddress IpAddress::v4(std::uint32_t host_order) {
    IpAddress a;
    a.bytes[0] = static_cast<std::uint8_t>(host_order >> 24);
    a.bytes[1] = static_cast<std::uint8_t>(host_order >> 16);
    a.bytes[2] = static_cast<std::uint8_t>(host_order >> 8);
    a.bytes[3] = static_cast<std::uint8_t>(host_order);
    return a;
}

IpAddress IpAddress::from_bytes(Family f, const void* data) {
    IpAddress a;
    a.family = f;
    std::memcpy(a.bytes.data(), data, f == Family::V4 ? 4 : 16);
    return a;
}

std::string IpAddress::str() const {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(family == Family::V4 ? AF_INET : AF_INET6, bytes.data(), buf, sizeof buf);
    return buf;
}

bool IpAddress::is_special() const {
    if (family == Family::V4) {
        const auto b0 = bytes[0];
        const bool all_ones = bytes[0] == 255 && bytes[1] == 255 && bytes[2] == 255 && bytes[3] == 255;
        return b0 == 0 || b0 == 127 || (b0 >= 224 && b0 <= 239) || all_ones;
    }
    static const std::array<std::uint8_t, 16> zero{};
    std::array<std::uint8_t, 16> loop{};
    loop[15] = 1;
    return bytes == zero || bytes == loop || bytes[0] == 0xff;
}

std::optional<IpPrefix> IpPrefix::parse(std::string_view text) {
    const auto slash = text.find('/');
    auto addr = IpAddress::parse(text.substr(0, slash));
    if (!addr) return std::nullopt;
    const unsigned max = addr->family == Family::V4 ? 32 : 128;
    unsigned len = max;
    if (slash != std::string_view::npos) {
        const auto digits = text.substr(slash + 1);
        if (digits.empty() || digits.size() > 3) return std::nullopt;
        auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), len);
        if (ec != std::errc{} || end != digits.data() + digits.size() || len > max) return std::nullopt;
    }
    return IpPrefix{*addr, static_cast<std::uint8_t>(len)};
}

std::string IpPrefix::str() const { return address.str() + "/" + std::to_string(length); }

namespace {
// Compare the first `bits` bits of two byte arrays.
bool same_leading_bits(const std::array<std::uint8_t, 16>& a, const std::array<std::uint8_t, 16>& b,
                       unsigned bits) {
    const unsigned whole = bits / 8;
    if (std::memcmp(a.data(), b.data(), whole) != 0) return false;
    const unsigned rest = bits % 8;
    if (rest == 0) return true;
    const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}
}  // namespace

bool IpPrefix::contains(const IpAddress& a) const {
    return a.family == address.family && same_leading_bits(address.bytes, a.bytes, length);
}

bool IpPrefix::overlaps(const IpPrefix& other) const {
    if (other.address.family != address.family) return false;
    return same_leading_bits(address.bytes, other.address.bytes, std::min(length, other.length));
}

bool IpPrefix::is_canonical() const {
    const unsigned total = static_cast<unsigned>(address.size()) * 8;
    for (unsigned bit = length; bit < total; ++bit) {
        if (address.bytes[bit / 8] & (0x80 >> (bit % 8))) return false;
    }
    return true;
}

std::uint64_t IpPrefix::address_count() const {
    const unsigned host_bits = static_cast<unsigned>(address.size()) * 8 - length;
    return host_bits >= 63 ? (std::uint64_t{1} << 63) : (std::uint64_t{1} << host_bits);
}

}  // namespace dpo
