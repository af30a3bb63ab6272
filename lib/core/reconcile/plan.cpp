// SPDX-License-Identifier: GPL-2.0-or-later
#include "plan.hpp"

#include <unordered_map>
#include <unordered_set>

namespace dpo::reconcile {

Plan plan(const std::vector<tc::Rule>& desired, const std::vector<tc::Installed>& installed) {
    Plan p;
    std::unordered_map<std::string, const tc::Rule*> wanted;
    wanted.reserve(desired.size());
    for (const auto& r : desired) wanted.emplace(r.key(), &r);

    std::unordered_set<std::string> claimed;
    std::vector<const tc::Installed*> differing;
    for (const auto& i : installed) {
        if (!i.owned) continue;  // not ours: left alone, whatever it is
        if (!i.decoded) {        // ours but not understood (an older version?): replace by deleting
            p.deletes.push_back({i.rule, i.handle});
            continue;
        }
        const std::string key = i.rule.key();
        const auto it = wanted.find(key);
        if (it == wanted.end() || claimed.count(key)) {  // stale, or a duplicate of one already kept
            p.deletes.push_back({i.rule, i.handle});
            continue;
        }
        claimed.insert(key);
        if (*it->second == i.rule) ++p.kept;
        else p.replaces.push_back({*it->second, i.handle});
    }
    for (const auto& r : desired)
        if (!claimed.count(r.key())) p.adds.push_back(r);
    return p;
}

}  // namespace dpo::reconcile
