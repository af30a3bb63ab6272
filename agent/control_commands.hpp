// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// What the control socket answers, read from the daemon's keyed state (the engine's
// desired and installed sets, its source keys, the NAT chunk table, the chunk-event
// record), not from dumps: a question costs what it asks about. The exceptions are
// said where they are: `rules` reads the packet counters of the devices it lists
// with one dump each.

#include <chrono>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "core/engine/engine.hpp"
#include "core/result.hpp"

namespace dpo::agent {

class NatRuntime;
class ChunkRecordFile;

// What the daemon knows of itself, beside the engine.
struct DaemonStatus {
    using Wall = std::chrono::system_clock::time_point;
    std::string version;
    Wall started{};
    std::chrono::steady_clock::time_point started_mono{};
    std::string mapping_file;
    Wall mapping_loaded{};
    std::uint64_t reloads = 0, reloads_refused = 0;
    bool ready = false;  // the first reconcile is done
    struct Pass {
        Wall at{};
        double ms = 0;
        std::string lane;
        std::size_t keys = 0, messages = 0, added = 0, replaced = 0, deleted = 0, refused = 0;
    };
    std::optional<Pass> last_reconcile;
    std::uint64_t reconciles = 0;
    struct Audit {
        Wall at{};
        double ms = 0;
        std::string reason;
        std::size_t drift = 0, dumps = 0;
    };
    std::optional<Audit> last_audit;
    std::uint64_t audits = 0;
    std::uint64_t overruns = 0;  // rtnetlink overruns (a resync each)
    std::string nat_state;       // "running", or why not
};

struct ControlContext {
    const engine::Engine& engine;
    const NatRuntime* nat;
    const ChunkRecordFile* record;  // nothing: no durable record (see the log)
    const DaemonStatus& status;
    program::Backend& tc;           // for the packet counters of `rules`
};

// The answers of the read-only commands; an error is the answer's `error`.
Result<nlohmann::json> control_status(const ControlContext& c);
Result<nlohmann::json> control_rules(const ControlContext& c, const nlohmann::json& args);
Result<nlohmann::json> control_explain(const ControlContext& c, const nlohmann::json& args);
Result<nlohmann::json> control_nat(const ControlContext& c, const nlohmann::json& args);

// ISO 8601 in UTC, to the second ("2026-11-23T14:02:00Z"); and back (also with
// fractions, and with +HH:MM offsets). Nothing when the text is not one.
std::string iso8601(std::chrono::system_clock::time_point t);
std::optional<std::int64_t> parse_iso8601_ms(const std::string& text);

}  // namespace dpo::agent
