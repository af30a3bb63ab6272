// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// What the reconciler needs from the kernel's tc, as an interface: the netlink
// implementation lives in lib/kernel, tests inject a fake.

#include <string>
#include <vector>

#include "core/reconcile/plan.hpp"
#include "core/result.hpp"
#include "core/tc/rule.hpp"

namespace dpo::program {

// One refused change: which rule, the errno and the kernel's extack message.
struct Refusal {
    std::string rule;  // the rule's key
    int error = 0;
    std::string extack;
};

struct ApplyReport {
    std::size_t sent = 0;     // filter messages sent to the kernel
    std::size_t done = 0;
    std::vector<Refusal> refused;
    // Messages whose ack never came (the receive buffer overran): their outcome is
    // unknown until the next dump.
    std::size_t lost = 0;
};

class Backend {
public:
    virtual ~Backend() = default;
    // Every filter of the device's clsact ingress, ours or not.
    virtual Result<std::vector<tc::Installed>> dump(const std::string& dev) = 0;
    // The clsact qdisc the rules hang on; an existing one is fine.
    virtual Result<Done> ensure_clsact(const std::string& dev) = 0;
    // Sends the plan in batches, deletes first; a refusal does not stop the rest.
    virtual ApplyReport apply(const reconcile::Plan& plan) = 0;
    // Changes shared actions (by their index) in place, for every rule holding them.
    virtual ApplyReport replace_actions(const std::vector<tc::Action>& actions) = 0;
};

}  // namespace dpo::program
