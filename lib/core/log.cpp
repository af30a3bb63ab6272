// SPDX-License-Identifier: GPL-2.0-or-later
#include "log.hpp"

#include <unistd.h>

#include "gcc_workarounds.hpp"
#include "text.hpp"

namespace dpo::log {

namespace {
// A value goes out bare when that cannot be misread, else quoted, with quotes,
// backslashes, tabs and newlines escaped, and any other control character or byte that
// is not well-formed UTF-8 (text.hpp) as \xNN: a line stays one line, and a terminal
// or journal reader shows what came from outside without obeying it.
void append_value(std::string& out, std::string_view v) {
    static constexpr char kHex[] = "0123456789abcdef";
    bool plain = !v.empty();
    for (std::string_view rest = v; plain && !rest.empty();) {
        const std::size_t n = utf8_char_length(rest);
        const auto c = static_cast<unsigned char>(rest[0]);
        plain = n > 1 || (n == 1 && c > 0x20 && c != 0x7f && c != '"' && c != '=' && c != '\\');
        rest.remove_prefix(n ? n : 1);
    }
    if (plain) {
        out += v;
        return;
    }
    out += '"';
    while (!v.empty()) {
        const std::size_t n = utf8_char_length(v);
        const auto c = static_cast<unsigned char>(v[0]);
        if (n == 1 && (c == '"' || c == '\\')) {
            out += '\\';
            out += static_cast<char>(c);
        } else if (n == 1 && c == '\n') {
            out += "\\n";
        } else if (n == 1 && c == '\t') {
            out += "\\t";
        } else if (n == 0 || (n == 1 && (c < 0x20 || c == 0x7f))) {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 15];
        } else {
            out.append(v.substr(0, n));
        }
        v.remove_prefix(n ? n : 1);
    }
    out += '"';
}
}  // namespace

// GCC 12 false positive at -O3 (GCC PR 105329): "literal" + std::string&& is flagged by
// -Wrestrict inside libstdc++'s basic_string::_M_replace.
DPO_GCC_WARNING_OFF("-Wrestrict")
std::string format(Level level, std::string_view event, std::initializer_list<Field> fields) {
    std::string line = "<" + std::to_string(static_cast<int>(level)) + ">";
    line += event;
    for (const auto& [k, v] : fields) {
        line += ' ';
        line += k;
        line += '=';
        append_value(line, v);
    }
    line += '\n';
    return line;
}
DPO_GCC_WARNING_ON

void write(Level level, std::string_view event, std::initializer_list<Field> fields) {
    const std::string line = format(level, event, fields);
    // One write() per line so concurrent writers never interleave inside a line.
    (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace dpo::log
