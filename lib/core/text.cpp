// SPDX-License-Identifier: GPL-2.0-or-later
#include "text.hpp"

#include <cstdint>
#include <ctime>

namespace dpo {

std::size_t utf8_char_length(std::string_view s) {
    if (s.empty()) return 0;
    const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    const unsigned char c = b(0);
    if (c < 0x80) return 1;
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07;
    else return 0;  // a continuation byte, an overlong lead (c0, c1) or beyond U+10FFFF
    if (s.size() < n) return 0;
    for (std::size_t i = 1; i < n; ++i) {
        if ((b(i) & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (b(i) & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff) return 0;  // overlong, too big
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;                                         // a surrogate
    return n;
}

std::string printable(std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(s.size());
    while (!s.empty()) {
        const std::size_t n = utf8_char_length(s);
        const auto c = static_cast<unsigned char>(s[0]);
        if (n == 0 || (n == 1 && (c < 0x20 || c == 0x7f))) {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 15];
            s.remove_prefix(1);
            continue;
        }
        out.append(s.substr(0, n));
        s.remove_prefix(n);
    }
    return out;
}

std::string utc_iso8601(std::int64_t unix_seconds) {
    const std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm utc{};
    gmtime_r(&t, &utc);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return buf;
}

}  // namespace dpo
