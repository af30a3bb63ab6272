// SPDX-License-Identifier: GPL-2.0-or-later
#include "log.hpp"

#include <unistd.h>

namespace dpo::log {

namespace {
void append_value(std::string& out, const std::string& v) {
    const bool plain = !v.empty() && v.find_first_of(" \t\n\"=\\") == std::string::npos;
    if (plain) {
        out += v;
        return;
    }
    out += '"';
    for (char c : v) {
        if (c == '"' || c == '\\') out += '\\';
        if (c == '\n') { out += "\\n"; continue; }
        out += c;
    }
    out += '"';
}
}  // namespace

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

void write(Level level, std::string_view event, std::initializer_list<Field> fields) {
    const std::string line = format(level, event, fields);
    // One write() per line so concurrent writers never interleave inside a line.
    (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace dpo::log
