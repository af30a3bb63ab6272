// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// A fake tc for the engine's tests: filters by (ifindex, handle), clsact qdiscs, shared
// redirects that bind the way the kernel's do (a filter naming an existing index gets
// the action as it is), answers with errors on demand, lost answers, and what "other
// processes" do, as notifications. It counts what the engine costs: batches, changes,
// dumps.
#include <cerrno>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/program/backend.hpp"

namespace dpo::test {

class FakeKernel : public program::Backend {
public:
    struct Filter {
        tc::Rule rule;
        bool owned = true;
    };

    std::map<std::string, int> ifindex;  // devices by name
    std::map<std::pair<int, std::uint32_t>, Filter> filters;
    std::set<int> clsact;
    std::map<std::uint32_t, tc::Redirect> shared;  // what each shared redirect does now

    // Costs.
    std::size_t batches = 0, changes = 0, dumps = 0, clsact_requests = 0;
    // Faults: errno for a change (0: none); answers lost (the change applied or not).
    std::function<int(const program::Change&)> refuse;
    std::function<bool(const program::Change&)> lose;
    bool apply_lost_changes = true;
    // What others did, handed over by the next apply() or poll_events().
    std::vector<program::TcEvent> pending;
    bool overrun = false;

    int dev(const std::string& name) const {
        const auto it = ifindex.find(name);
        return it == ifindex.end() ? 0 : it->second;
    }

    // As the netlink backend does: the batch goes in while the caller works on, and its
    // answers come at collect(). Here it goes in only at collect(), the latest it could,
    // and anything else asked of the kernel in between is a bug of the caller's.
    void submit(const std::vector<program::Change>& cs) override {
        idle();
        submitted = &cs;
    }
    program::Applied collect() override {
        const auto* cs = std::exchange(submitted, nullptr);
        return cs ? apply(*cs) : program::Applied{};
    }
    void idle() const {
        if (submitted) throw std::logic_error("fake kernel: asked for something while a batch is in flight");
    }
    const std::vector<program::Change>* submitted = nullptr;

    program::Applied apply(const std::vector<program::Change>& cs) override {
        idle();
        ++batches;
        program::Applied out;
        take_pending(out, 0);
        for (const auto& c : cs) {
            ++changes;
            program::ChangeResult r;
            const bool lost = lose && lose(c);
            const int forced = refuse ? refuse(c) : 0;
            if (forced) {
                r.error = forced;
            } else if (!lost || apply_lost_changes) {
                r.error = perform(c);
            }
            // Unobserved, no echo says where a filter is.
            if (!r.error && observed && c.kind != program::Change::Kind::Delete &&
                c.kind != program::Change::Kind::ReplaceAction)
                r.not_in_hw = true;
            if (lost) r = program::ChangeResult{0, "", true, false, false};
            out.results.push_back(r);
        }
        return out;
    }

    program::Applied poll_events() override {
        idle();
        program::Applied out;
        take_pending(out, 0);
        return out;
    }
    int event_fd() const override { return -1; }

    void set_observed(bool on) override {
        idle();
        observed = on;
    }
    bool observed = true;
    std::size_t terse_dumps = 0;

    using program::Backend::dump;
    Result<Done> dump(const std::string& name, bool terse, const Visitor& each) override {
        idle();
        ++(terse ? terse_dumps : dumps);
        const int i = dev(name);
        if (!i) return fail("no device " + name);
        for (const auto& [key, f] : filters) {
            if (key.first != i) continue;
            tc::Installed in;
            in.rule = f.rule;
            in.rule.dev = name;
            in.handle = key.second;
            in.owned = f.owned;
            in.decoded = !terse;
            in.not_in_hw = true;
            each(std::move(in));
        }
        return Done{};
    }

    Result<Done> ensure_clsact(const std::string& name) override {
        idle();
        ++clsact_requests;
        const int i = dev(name);
        if (!i) return fail("no device " + name);
        clsact.insert(i);
        return Done{};
    }

    // ---- what other processes do
    void foreign_delete(int i, std::uint32_t handle) {
        filters.erase({i, handle});
        program::TcEvent e;
        e.kind = program::TcEvent::Kind::FilterDeleted;
        e.ifindex = i;
        e.handle = handle;
        pending.push_back(e);
    }
    void foreign_qdisc_delete(int i) {
        clsact.erase(i);
        for (auto it = filters.begin(); it != filters.end();) it = it->first.first == i ? filters.erase(it) : std::next(it);
        program::TcEvent e;
        e.kind = program::TcEvent::Kind::QdiscDeleted;
        e.ifindex = i;
        pending.push_back(e);
    }
    void foreign_replace(int i, std::uint32_t handle, tc::Rule r) {
        filters[{i, handle}] = Filter{r, false};
        program::TcEvent e;
        e.kind = program::TcEvent::Kind::FilterChanged;
        e.ifindex = i;
        e.handle = handle;
        tc::Installed in;
        in.rule = r;
        in.handle = handle;
        in.owned = false;
        in.decoded = true;
        e.filter = in;
        pending.push_back(e);
    }
    // Everything of ours on a device, as the engine should want it.
    std::vector<tc::Rule> rules_on(int i) const {
        std::vector<tc::Rule> out;
        for (const auto& [key, f] : filters)
            if (key.first == i && f.owned) out.push_back(f.rule);
        return out;
    }

private:
    void take_pending(program::Applied& out, std::size_t after) {
        for (auto& e : pending) {
            out.events.push_back(std::move(e));
            out.after.push_back(after);
        }
        pending.clear();
        out.overrun = overrun;
        overrun = false;
    }

    int perform(const program::Change& c) {
        using Kind = program::Change::Kind;
        const auto key = std::make_pair(c.ifindex, c.handle);
        switch (c.kind) {
            case Kind::Add: {
                if (!clsact.count(c.ifindex)) return EINVAL;  // "Parent Qdisc doesn't exists"
                if (filters.count(key)) return EEXIST;
                filters[key] = Filter{bind(c.rule), true};
                return 0;
            }
            case Kind::Replace:
                if (!filters.count(key)) return ENOENT;
                filters[key] = Filter{bind(c.rule), true};
                return 0;
            case Kind::Delete:
                return filters.erase(key) ? 0 : ENOENT;
            case Kind::ReplaceAction: {
                const auto* m = std::get_if<tc::Redirect>(&c.action);
                if (!m) return EINVAL;
                shared[m->index] = *m;
                for (auto& [_, f] : filters)
                    for (auto& a : f.rule.actions)
                        if (auto* x = std::get_if<tc::Redirect>(&a); x && x->index == m->index) *x = *m;
                return 0;
            }
        }
        return EINVAL;
    }

    // A filter naming a shared action that exists binds to it as it is.
    tc::Rule bind(tc::Rule r) {
        for (auto& a : r.actions)
            if (auto* m = std::get_if<tc::Redirect>(&a); m && m->index) {
                bool held = false;
                for (const auto& [_, f] : filters)
                    for (const auto& b : f.rule.actions)
                        if (const auto* x = std::get_if<tc::Redirect>(&b); x && x->index == m->index) held = true;
                if (held && shared.count(m->index)) *m = shared[m->index];
                else shared[m->index] = *m;
            }
        return r;
    }
};

}  // namespace dpo::test
