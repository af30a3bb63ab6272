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

namespace dpo::log {

enum class Level { Error = 3, Warning = 4, Notice = 5, Info = 6, Debug = 7 };

using Field = std::pair<std::string_view, std::string>;

// Formats one line without writing it (tests read it; write() prints it).
std::string format(Level level, std::string_view event, std::initializer_list<Field> fields);
void write(Level level, std::string_view event, std::initializer_list<Field> fields = {});

inline void error(std::string_view e, std::initializer_list<Field> f = {}) { write(Level::Error, e, f); }
inline void warning(std::string_view e, std::initializer_list<Field> f = {}) { write(Level::Warning, e, f); }
inline void notice(std::string_view e, std::initializer_list<Field> f = {}) { write(Level::Notice, e, f); }
inline void info(std::string_view e, std::initializer_list<Field> f = {}) { write(Level::Info, e, f); }

}  // namespace dpo::log
