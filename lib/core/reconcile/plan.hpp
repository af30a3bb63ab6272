// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Reconciling, as a pure function: the rules we want and the rules the kernel has
// -> the smallest set of changes. Rules already right are adopted untouched (a
// restart with nothing changed sends nothing); rules that are not ours are never
// touched; deletes come before replaces and adds.

#include <cstdint>
#include <vector>

#include "core/tc/rule.hpp"

namespace dpo::reconcile {

struct Delete {
    tc::Rule rule;  // where it is (dev, chain, prio, protocol)
    std::uint32_t handle = 0;
};
struct Replace {
    tc::Rule rule;
    std::uint32_t handle = 0;
};

struct Plan {
    std::vector<Delete> deletes;
    std::vector<Replace> replaces;
    std::vector<tc::Rule> adds;
    std::size_t kept = 0;  // owned rules already right, adopted as they are

    bool empty() const { return deletes.empty() && replaces.empty() && adds.empty(); }
    std::size_t changes() const { return deletes.size() + replaces.size() + adds.size(); }
};

Plan plan(const std::vector<tc::Rule>& desired, const std::vector<tc::Installed>& installed);

}  // namespace dpo::reconcile
