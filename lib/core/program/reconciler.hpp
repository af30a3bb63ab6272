// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// One reconcile pass: read what is installed, plan the difference, send it, and
// report what the kernel did, per rule in hardware or not.

#include <string>
#include <vector>

#include "core/result.hpp"
#include "core/program/backend.hpp"

namespace dpo::reconcile {

struct Outcome {
    std::size_t kept = 0, added = 0, replaced = 0, deleted = 0;
    std::size_t messages = 0;             // filter messages sent: 0 when nothing changed
    std::size_t repointed = 0;            // shared redirects pointed at their device again
    std::size_t lost = 0;                 // acks lost to a receive overrun (then re-planned once)
    std::size_t in_hw = 0, not_in_hw = 0;  // of our rules after the pass
    std::vector<program::Refusal> refused;
};

// Shared redirects (by index) that installed rules of ours hold with another target
// than the desired rules give them: each as the desired action.
std::vector<tc::Action> stale_redirects(const std::vector<tc::Rule>& desired,
                                        const std::vector<tc::Installed>& installed);

class Reconciler {
public:
    explicit Reconciler(program::Backend& backend) : backend_(backend) {}

    // `devs` are the devices we own rules on; a device missing from `desired`
    // keeps none of ours, and desired rules on other devices are left out.
    Result<Outcome> sync(const std::vector<tc::Rule>& desired, const std::vector<std::string>& devs);
    // Deletes every rule of ours on `devs`, and nothing else.
    Result<Outcome> flush(const std::vector<std::string>& devs);
    // What `devs` hold now (a device that does not exist holds nothing).
    Result<std::vector<tc::Installed>> installed(const std::vector<std::string>& devs) { return dump_all(devs); }

private:
    Result<std::vector<tc::Installed>> dump_all(const std::vector<std::string>& devs);

    program::Backend& backend_;
};

}  // namespace dpo::reconcile
