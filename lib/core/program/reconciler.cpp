// SPDX-License-Identifier: GPL-2.0-or-later
#include "reconciler.hpp"

#include <algorithm>
#include <map>

namespace dpo::reconcile {

std::vector<tc::Action> stale_redirects(const std::vector<tc::Rule>& desired,
                                        const std::vector<tc::Installed>& installed) {
    std::map<std::uint32_t, const tc::Redirect*> want;
    for (const auto& r : desired)
        for (const auto& a : r.actions)
            if (const auto* m = std::get_if<tc::Redirect>(&a); m && m->index) want.emplace(m->index, m);
    std::map<std::uint32_t, tc::Action> stale;
    for (const auto& i : installed) {
        if (!i.owned || !i.decoded) continue;
        for (const auto& a : i.rule.actions) {
            const auto* m = std::get_if<tc::Redirect>(&a);
            if (!m || !m->index) continue;
            const auto w = want.find(m->index);
            if (w != want.end() && !(*m == *w->second)) stale.emplace(m->index, *w->second);
        }
    }
    std::vector<tc::Action> out;
    for (auto& [_, a] : stale) out.push_back(std::move(a));
    return out;
}

Result<std::vector<tc::Installed>> Reconciler::dump_all(const std::vector<std::string>& devs) {
    std::vector<tc::Installed> all;
    for (const auto& dev : devs) {
        auto d = backend_.dump(dev);
        if (!d) return fail(d.error());
        all.insert(all.end(), std::make_move_iterator(d->begin()), std::make_move_iterator(d->end()));
    }
    return all;
}

Result<Outcome> Reconciler::sync(const std::vector<tc::Rule>& all_desired, const std::vector<std::string>& devs) {
    // Rules for a device outside `devs` (not there yet) wait for a pass that has it:
    // without its dump, adding them would only collide with what may be there.
    std::vector<tc::Rule> desired;
    desired.reserve(all_desired.size());
    for (const auto& r : all_desired)
        if (std::find(devs.begin(), devs.end(), r.dev) != devs.end()) desired.push_back(r);
    auto installed = dump_all(devs);
    if (!installed) return fail(installed.error());
    for (const auto& dev : devs) {
        const bool wants = std::any_of(desired.begin(), desired.end(), [&](const tc::Rule& r) { return r.dev == dev; });
        const bool has_any = std::any_of(installed->begin(), installed->end(),
                                         [&](const tc::Installed& i) { return i.rule.dev == dev; });
        // Only a device with no filter at all may lack the clsact qdisc.
        if (wants && !has_any)
            if (auto q = backend_.ensure_clsact(dev); !q) return fail(q.error());
    }
    Outcome out;
    // A shared redirect (one counter per egress) outlives a device it points to when
    // rules on other devices hold it: after the device is re-created it points
    // nowhere, and a filter naming its index only binds to it as it is. Point it
    // right first, in place, for every holder.
    if (auto stale = stale_redirects(desired, *installed); !stale.empty()) {
        const program::ApplyReport report = backend_.replace_actions(stale);
        out.repointed = report.done;
        out.refused = report.refused;
        auto again = dump_all(devs);
        if (!again) return fail(again.error());
        installed = std::move(again);
    }
    Plan p = plan(desired, *installed);
    out.kept = p.kept;
    const std::vector<tc::Installed>* status = &*installed;
    std::vector<tc::Installed> after;
    // A second round only when acks were lost: what the first did is read back and
    // whatever it did not do is sent again, so an overrun leaves no silent gap.
    for (int round = 0; round < 2 && !p.empty(); ++round) {
        const program::ApplyReport report = backend_.apply(p);
        out.messages += report.sent;
        out.refused.insert(out.refused.end(), report.refused.begin(), report.refused.end());
        out.lost += report.lost;
        out.deleted += p.deletes.size();
        out.replaced += p.replaces.size();
        out.added += p.adds.size();
        // The kernel decides what is in hardware: read it back.
        auto again = dump_all(devs);
        if (!again) return fail(again.error());
        after = std::move(*again);
        status = &after;
        if (report.lost == 0) break;
        p = plan(desired, after);
    }
    for (const auto& i : *status) {
        if (!i.owned) continue;
        out.in_hw += i.in_hw;
        out.not_in_hw += i.not_in_hw;
    }
    return out;
}

Result<Outcome> Reconciler::flush(const std::vector<std::string>& devs) { return sync({}, devs); }

}  // namespace dpo::reconcile
