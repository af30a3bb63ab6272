// SPDX-License-Identifier: GPL-2.0-or-later
#include "plan.hpp"

#include <unordered_map>
#include <unordered_set>

namespace dpo::reconcile {

Plan plan(const std::vector<tc::Rule>& desired, const std::vector<tc::Installed>& installed) {
    Plan p;
    std::unordered_map<tc::Identity, const tc::Rule*, tc::IdentityHash> wanted;
    wanted.reserve(desired.size());
    for (const auto& r : desired) wanted.emplace(r.identity(), &r);

    std::unordered_set<tc::Identity, tc::IdentityHash> claimed;
    std::vector<const tc::Installed*> differing;
    for (const auto& i : installed) {
        if (!i.owned) continue;  // not ours: left alone, whatever it is
        if (!i.decoded) {        // ours but not understood (an older version?): replace by deleting
            p.deletes.push_back({i.rule, i.handle});
            continue;
        }
        tc::Identity key = i.rule.identity();
        const auto it = wanted.find(key);
        if (it == wanted.end() || claimed.count(key)) {  // stale, or a duplicate of one already kept
            p.deletes.push_back({i.rule, i.handle});
            continue;
        }
        claimed.insert(std::move(key));
        if (*it->second == i.rule) ++p.kept;
        else p.replaces.push_back({*it->second, i.handle});
    }
    for (const auto& r : desired)
        if (!claimed.count(r.identity())) p.adds.push_back(r);
    return p;
}

}  // namespace dpo::reconcile
