// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The one writer of tc, as an interface: the engine (core/engine) says which filters to
// add, replace or delete, at handles it chose, and learns what the kernel did from the
// answer to each change (the echo of the filter, with its in_hw state, and the ack),
// never from a dump. Between changes the writer also hears what others do to tc (a
// filter of ours deleted or replaced, our clsact qdisc deleted) and hands it over in
// the order it happened. The netlink implementation is lib/kernel/tc_netlink; tests
// inject a fake kernel.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/result.hpp"
#include "core/tc/rule.hpp"

namespace dpo::program {

// One change to one filter.
struct Change {
    enum class Kind : std::uint8_t {
        Add,            // create at `handle` (it must be free)
        Replace,        // replace the filter at `handle` in place (it must exist)
        Delete,         // delete the filter at `handle` (`rule` gives its place only)
        ReplaceAction,  // change the shared action `action` (by its index) for every holder
    };
    Kind kind = Kind::Add;
    int ifindex = 0;
    tc::Rule rule;
    std::uint32_t handle = 0;
    tc::Action action;  // ReplaceAction

    // Delete the filter at `handle`; `rule` only says where it stands (chain, prio, protocol).
    static Change deletion(int ifindex, tc::Rule rule, std::uint32_t handle) {
        Change c;
        c.kind = Kind::Delete;
        c.ifindex = ifindex;
        c.rule = std::move(rule);
        c.handle = handle;
        return c;
    }
};

// What the kernel answered to one change.
struct ChangeResult {
    int error = 0;          // 0, or the errno of the refusal
    std::string extack;     // the kernel's reason, when it gave one
    bool lost = false;      // no answer came (a receive overrun): the outcome is unknown
    bool in_hw = false;     // from the echo of an added or replaced filter
    bool not_in_hw = false;
};

// What another process did to tc on a device, as a notification said.
struct TcEvent {
    enum class Kind : std::uint8_t {
        FilterChanged,  // a filter added or replaced (`filter` as decoded)
        FilterDeleted,  // the filter at `handle`
        PrioDeleted,    // every filter of (chain, prio, protocol): a whole priority or chain went
        QdiscDeleted,   // the clsact qdisc, and every filter with it
    };
    Kind kind = Kind::FilterChanged;
    int ifindex = 0;
    std::uint32_t chain = 0;
    std::uint16_t prio = 0;
    std::uint16_t protocol = 0;
    std::uint32_t handle = 0;
    std::optional<tc::Installed> filter;
};

// The answers to a batch of changes, with what others did meanwhile: `events[i]`
// happened after the first `after[i]` changes were answered.
struct Applied {
    std::vector<ChangeResult> results;  // one per change, in order
    std::vector<TcEvent> events;
    std::vector<std::size_t> after;
    bool overrun = false;  // notifications were lost (ENOBUFS): only an audit can tell what changed
};

class Backend {
public:
    virtual ~Backend() = default;
    // Sends the changes in batches, in order; a refusal does not stop the rest.
    virtual Applied apply(const std::vector<Change>& changes) = 0;
    // apply() in two halves, so that the caller can work while the kernel does: submit()
    // starts it, collect() waits for and returns its answers. `changes` must stay as they
    // are until then, and nothing else may be asked of the backend in between. By default
    // submit() applies at once (a fake kernel has nothing to overlap).
    virtual void submit(const std::vector<Change>& changes) { submitted_ = apply(changes); }
    virtual Applied collect() { return std::move(submitted_); }
    // What others did since the last call, without waiting.
    virtual Applied poll_events() = 0;
    // Readable when notifications wait; -1 when the backend has none to offer.
    virtual int event_fd() const = 0;
    // Every filter of the device's clsact ingress, ours or not (an audit), one at a time as
    // the kernel's dump comes: a third of a million need not be in memory at once.
    // `terse`: each with its place, handle, ownership and in_hw state only (`decoded`
    // false). A device that is gone holds no filter.
    using Visitor = std::function<void(tc::Installed&&)>;
    virtual Result<Done> dump(const std::string& dev, bool terse, const Visitor& each) = 0;
    // The same, gathered (tools, tests).
    Result<std::vector<tc::Installed>> dump(const std::string& dev, bool terse = false) {
        std::vector<tc::Installed> out;
        auto r = dump(dev, terse, [&](tc::Installed&& i) { out.push_back(std::move(i)); });
        if (!r) return fail(r.error());
        return out;
    }
    // Observed (the default): every change is echoed and the writer listens to others.
    // Unobserved, the kernel builds no notification for a change, which halves its work:
    // for a first start, before anything of ours is there to protect.
    virtual void set_observed(bool on) = 0;
    // The clsact qdisc the rules hang on; an existing one is fine.
    virtual Result<Done> ensure_clsact(const std::string& dev) = 0;

private:
    Applied submitted_;
};

}  // namespace dpo::program
