// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Log records as journald fields (core/log.hpp journal_fields) when stderr is the
// journal: `journalctl -u dpoffloadd EVENT=chunk-allocated SUBSCRIBER=10.100.0.2`.
// Otherwise the lines stay on stderr as they are.

namespace dpo::agent {

// Whether stderr is connected to the journal: JOURNAL_STREAM names its device and inode
// (sd-daemon(3), systemd.exec(5)); a stderr redirected elsewhere by the service itself
// or a shell in between no longer matches.
bool stderr_is_journal();
// Makes core/log send each record with sd_journal_sendv when stderr_is_journal(); true
// if it did. Call once at start, before any thread logs.
bool use_journal_when_connected();

}  // namespace dpo::agent
