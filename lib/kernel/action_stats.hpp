// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The dataplane's named counters: the statistics of the shared tc actions (a mirred per
// egress interface, a gact drop per reason; compile/pipeline.hpp), read with an
// RTM_GETACTION dump and named by compile/counter_names.hpp. What `tc -s actions show
// action gact|mirred` prints, without hex indices.
//
// Stable API: `dpoffloadctl counters` (the control socket) and the metrics exporter call
// counters(). A reader holds its own rtnetlink socket, so a thread other than the
// daemon's loop may use one (one reader per thread: it is not shared).
//
// Cost: the kernel dumps every action of the two kinds, and rules hold one gact each
// (their goto), so a read is O(rules) in the kernel and on the socket; terse, so the
// kernel writes ~60 bytes an action. The result is O(interfaces).

#include <libmnl/libmnl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/compile/counter_names.hpp"
#include "core/mapping.hpp"
#include "core/result.hpp"
#include "kernel/tc_codec.hpp"

namespace dpo::kernel {

// One named counter, as the kernel counts it now.
struct Counter {
    std::string kind;  // "egress" or "drop" (compile::to_string(CounterKind))
    std::string name;  // the interface ("blue"), or the drop reason ("invalid")
    std::uint32_t index = 0;
    std::uint64_t packets = 0, bytes = 0;  // software and hardware
    std::optional<std::uint64_t> hw_packets, hw_bytes;  // hardware only, where the kernel says
    std::string device;  // egress: the device packets leave by
    std::string detail;  // "vlan 100", "evpn vni 5001"; for a drop what it drops
    bool operator==(const Counter&) const = default;
};

class ActionStatsReader {
public:
    static Result<std::unique_ptr<ActionStatsReader>> open();
    ~ActionStatsReader();
    ActionStatsReader(const ActionStatsReader&) = delete;
    ActionStatsReader& operator=(const ActionStatsReader&) = delete;

    // Every action of `kind` ("gact", "mirred") the kernel has, ours or not.
    Result<std::vector<ActionStats>> read(const std::string& kind);
    // The actions among gact and mirred that `names` names (counter_names() of the
    // running mapping), by kind then index. An action without a name is no counter of
    // ours (a rule's own goto); a name without an action is a counter no rule holds
    // now, left out (the kernel has no number for it).
    Result<std::vector<Counter>> counters(const std::vector<compile::CounterName>& names);

private:
    explicit ActionStatsReader(mnl_socket* s) : sock_(s) {}
    mnl_socket* sock_;
    std::uint32_t seq_ = 0;
};

// One-shot, for the control socket: opens a reader, reads, closes. Named under `m`.
Result<std::vector<Counter>> counters(const Mapping& m);

}  // namespace dpo::kernel
