// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// One line per event on stderr, in the form journald keeps: a "<N>" syslog priority
// prefix (systemd reads it and strips it) and then "event key=value ...", values
// quoted when they hold spaces, so lines stay greppable and machine-readable.

#include <cstdio>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dpo::log {

enum class Level { Error = 3, Warning = 4, Notice = 5, Info = 6, Debug = 7 };

using Field = std::pair<std::string_view, std::string>;

// Formats one line without writing it (tests read it; write() prints it).
std::string format(Level level, std::string_view event, std::initializer_list<Field> fields);
void write(Level level, std::string_view event, std::initializer_list<Field> fields = {});

// Where write() sends a line. By default the line above, on stderr; the daemon may
// replace it once at start, before any thread runs (agent/journal_sink.hpp sends
// journald fields). The core knows no journal: a sink is whatever the caller gives.
// A sink must be callable from any thread (the reload thread logs too).
using Sink = void (*)(Level level, std::string_view event, std::initializer_list<Field> fields);
void set_sink(Sink sink);  // nullptr: stderr again
void write_stderr(Level level, std::string_view event, std::initializer_list<Field> fields);

// The same record as journald fields, each "NAME=value", for sd_journal_sendv:
// MESSAGE= (the line without its "<N>" prefix and newline), PRIORITY=, EVENT= and one
// field per key, upper-cased (journal_field_name). Values go as they are when they are
// printable UTF-8, else escaped as in the line, so a field matches what was logged
// (`journalctl SUBSCRIBER=10.100.0.2`) and never carries a control character.
std::vector<std::string> journal_fields(Level level, std::string_view event, std::initializer_list<Field> fields);
// A key as a journal field name: [a-z0-9_] upper-cased, '-' and anything else as '_'.
// A name journald or this format gives a meaning of its own (MESSAGE, PRIORITY, EVENT,
// CODE_*, SYSLOG_*, ...), or one it would refuse (a leading '_' or digit, empty), gets
// the prefix DPO_; at most 64 characters, journald's limit.
std::string journal_field_name(std::string_view key);

inline void error(std::string_view e, std::initializer_list<Field> f = {}) { write(Level::Error, e, f); }
inline void warning(std::string_view e, std::initializer_list<Field> f = {}) { write(Level::Warning, e, f); }
inline void notice(std::string_view e, std::initializer_list<Field> f = {}) { write(Level::Notice, e, f); }
inline void info(std::string_view e, std::initializer_list<Field> f = {}) { write(Level::Info, e, f); }

}  // namespace dpo::log
