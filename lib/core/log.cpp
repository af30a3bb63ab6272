// SPDX-License-Identifier: GPL-2.0-or-later
#include "log.hpp"

#include <unistd.h>

#include <atomic>

#include "gcc_workarounds.hpp"
#include "text.hpp"

namespace dpo::log {

namespace {
static constexpr char kHex[] = "0123456789abcdef";

// Control characters and bytes that are not well-formed UTF-8 (text.hpp) as \xNN;
// quotes and backslashes escaped when `quoted`.
void append_escaped(std::string& out, std::string_view v, bool quoted) {
    while (!v.empty()) {
        const std::size_t n = utf8_char_length(v);
        const auto c = static_cast<unsigned char>(v[0]);
        if (quoted && n == 1 && (c == '"' || c == '\\')) {
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
}

// A value goes out bare when that cannot be misread, else quoted, with quotes,
// backslashes, tabs and newlines escaped, and any other control character or byte that
// is not well-formed UTF-8 (text.hpp) as \xNN: a line stays one line, and a terminal
// or journal reader shows what came from outside without obeying it.
void append_value(std::string& out, std::string_view v) {
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
    append_escaped(out, v, true);
    out += '"';
}

// Printable UTF-8 (spaces, quotes and '=' included): a journal field can hold it as it is.
bool printable_utf8(std::string_view v) {
    while (!v.empty()) {
        const std::size_t n = utf8_char_length(v);
        const auto c = static_cast<unsigned char>(v[0]);
        if (n == 0 || (n == 1 && (c < 0x20 || c == 0x7f))) return false;
        v.remove_prefix(n);
    }
    return true;
}

std::string body(std::string_view event, std::initializer_list<Field> fields) {
    std::string line(event);
    for (const auto& [k, v] : fields) {
        line += ' ';
        line += k;
        line += '=';
        append_value(line, v);
    }
    return line;
}

// Fields journald or this format reads a meaning into (systemd.journal-fields(7)): a
// key of ours must not set them. Names starting with '_' are journald's own (trusted).
bool reserved_field(std::string_view name) {
    static constexpr std::string_view kExact[] = {
        "MESSAGE", "MESSAGE_ID", "PRIORITY", "ERRNO", "INVOCATION_ID", "USER_INVOCATION_ID",
        "DOCUMENTATION", "TID", "UNIT", "USER_UNIT", "EVENT"};
    static constexpr std::string_view kPrefixes[] = {"CODE_", "SYSLOG_", "OBJECT_", "COREDUMP_", "DPO_"};
    for (auto e : kExact)
        if (name == e) return true;
    for (auto p : kPrefixes)
        if (name.substr(0, p.size()) == p) return true;
    return false;
}

std::atomic<Sink> g_sink{nullptr};
}  // namespace

// GCC 12 false positive at -O3 (GCC PR 105329): "literal" + std::string&& is flagged by
// -Wrestrict inside libstdc++'s basic_string::_M_replace.
DPO_GCC_WARNING_OFF("-Wrestrict")
std::string format(Level level, std::string_view event, std::initializer_list<Field> fields) {
    std::string line = "<" + std::to_string(static_cast<int>(level)) + ">";
    line += body(event, fields);
    line += '\n';
    return line;
}
DPO_GCC_WARNING_ON

void set_sink(Sink sink) { g_sink.store(sink, std::memory_order_release); }

void write_stderr(Level level, std::string_view event, std::initializer_list<Field> fields) {
    const std::string line = format(level, event, fields);
    // One write() per line so concurrent writers never interleave inside a line.
    (void)!::write(STDERR_FILENO, line.data(), line.size());
}

void write(Level level, std::string_view event, std::initializer_list<Field> fields) {
    if (const Sink sink = g_sink.load(std::memory_order_acquire)) sink(level, event, fields);
    else write_stderr(level, event, fields);
}

std::string journal_field_name(std::string_view key) {
    std::string name;
    name.reserve(key.size());
    for (const char ch : key) {
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 'a' && c <= 'z') name += static_cast<char>(c - 'a' + 'A');
        else if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) name += static_cast<char>(c);
        else name += '_';
    }
    if (name.empty() || name[0] == '_' || (name[0] >= '0' && name[0] <= '9') || reserved_field(name))
        name.insert(0, "DPO_");
    if (name.size() > 64) name.resize(64);
    return name;
}

std::vector<std::string> journal_fields(Level level, std::string_view event, std::initializer_list<Field> fields) {
    std::vector<std::string> out;
    out.reserve(3 + fields.size());
    out.push_back("MESSAGE=" + body(event, fields));
    out.push_back("PRIORITY=" + std::to_string(static_cast<int>(level)));
    std::string ev = "EVENT=";
    if (printable_utf8(event)) ev += event;
    else append_escaped(ev, event, false);
    out.push_back(std::move(ev));
    for (const auto& [k, v] : fields) {
        std::string f = journal_field_name(k);
        f += '=';
        if (printable_utf8(v)) f += v;
        else append_escaped(f, v, false);
        out.push_back(std::move(f));
    }
    return out;
}

}  // namespace dpo::log
