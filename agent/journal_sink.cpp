// SPDX-License-Identifier: GPL-2.0-or-later
#include "journal_sink.hpp"

#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

// libsystemd's sd_journal_sendv: the reference implementation of journald's native
// protocol (a datagram per record, a memfd for a large one), not a copy of it.
#include <systemd/sd-journal.h>

#include "core/log.hpp"

namespace dpo::agent {

namespace {

void journal_sink(log::Level level, std::string_view event, std::initializer_list<log::Field> fields) {
    std::vector<std::string> f = log::journal_fields(level, event, fields);
    // The stream gave the unit's identifier (the process name); say it here too, so
    // `journalctl -t dpoffloadd` and `-o short` read the same for both.
    f.emplace_back("SYSLOG_IDENTIFIER=dpoffloadd");
    std::vector<iovec> iov;
    iov.reserve(f.size());
    for (auto& s : f) iov.push_back({s.data(), s.size()});
    // A record the journal did not take (its socket full, journald restarting) still
    // goes out, as a line on the stream: attribution records must not be lost.
    if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) < 0) log::write_stderr(level, event, fields);
}

}  // namespace

bool stderr_is_journal() {
    const char* env = std::getenv("JOURNAL_STREAM");
    if (!env) return false;
    std::uintmax_t dev = 0, ino = 0;
    char tail = 0;
    if (std::sscanf(env, "%ju:%ju%c", &dev, &ino, &tail) != 2) return false;
    struct stat st {};
    if (fstat(STDERR_FILENO, &st) != 0) return false;
    return static_cast<std::uintmax_t>(st.st_dev) == dev && static_cast<std::uintmax_t>(st.st_ino) == ino;
}

bool use_journal_when_connected() {
    if (!stderr_is_journal()) return false;
    log::set_sink(journal_sink);
    return true;
}

}  // namespace dpo::agent
