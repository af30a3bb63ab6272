// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// The daemon's keyed copy of the kernel's slow path, updated in place by typed events:
// links by ifindex (and name), addresses, routes per table, neighbours by (ifindex,
// address). The watcher (lib/kernel/rtnl_watcher) turns each netlink notification into
// one Event; apply() says what it changed, as the compiler sees it, so that the engine
// recompiles exactly what depends on it. A full snapshot is taken only at start and
// after an overrun: resync() turns the difference into the same changes.
//
// Every change costs O(1) (amortised), whatever the size of the tables.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "core/model/kernel_state.hpp"
#include "core/model/route_table.hpp"

namespace dpo::model {

// What the watcher hands over: one object's new state, or its removal.
struct LinkEvent {
    int ifindex = 0;
    std::optional<Link> link;  // nothing: the link was removed
};
struct AddressEvent {
    Address address;
    bool removed = false;
};
struct RouteEvent {
    Route route;  // a removal needs only the route's identity (table, destination, tos, priority)
    bool removed = false;
};
struct NeighbourEvent {
    Neighbour neighbour;  // a removal needs only (ifindex, address)
    bool removed = false;
};
using Event = std::variant<LinkEvent, AddressEvent, RouteEvent, NeighbourEvent>;

// What an event changed.
struct LinkChange {
    int ifindex = 0;
    std::optional<Link> before, after;
};
// Whether an IP address is one of the host's own (on any device) before and after.
struct AddressChange {
    IpAddress address;
    bool local_before = false, local_after = false;
};
// A prefix whose best route changed (another metric of it changing is no change).
struct RouteChange {
    std::uint32_t table = 0;
    IpPrefix prefix;
    std::optional<Route> before, after;
};
struct NeighbourChange {
    int ifindex = 0;
    IpAddress address;
    std::optional<Neighbour> before, after;
};
using Change = std::variant<LinkChange, AddressChange, RouteChange, NeighbourChange>;

class KernelModel {
public:
    KernelModel() = default;
    explicit KernelModel(const KernelState& snapshot);

    // Nothing when the event changed nothing the model keeps (an address added twice,
    // a metric that does not win, the same neighbour state again).
    std::optional<Change> apply(const Event& e);
    // Replaces the whole model by a fresh snapshot; the differences, as changes.
    std::vector<Change> resync(const KernelState& snapshot);
    KernelState snapshot() const;

    const Link* link(int ifindex) const;
    const Link* link_named(std::string_view name) const;
    std::string link_name(int ifindex) const;  // "#N" when unknown
    const std::map<int, Link>& links() const { return links_; }

    bool is_local(const IpAddress& a) const { return local_.count(a) != 0; }
    const std::map<std::pair<int, IpPrefix>, Address>& addresses() const { return addresses_; }

    // The table's routes; an empty table when it has none.
    const RouteTable& table(std::uint32_t id) const;
    const std::map<std::uint32_t, RouteTable>& tables() const { return tables_; }

    const Neighbour* neighbour(int ifindex, const IpAddress& a) const;
    std::size_t neighbour_count() const { return neighbours_.size(); }
    template <class Fn>
    void for_each_neighbour(Fn fn) const {
        for (const auto& [_, n] : neighbours_) fn(n);
    }

private:
    struct NeighbourKey {
        int ifindex;
        IpAddress address;
        bool operator==(const NeighbourKey&) const = default;
    };
    struct NeighbourKeyHash {
        std::size_t operator()(const NeighbourKey& k) const noexcept;
    };
    struct AddressHash {
        std::size_t operator()(const IpAddress& a) const noexcept;
    };

    std::optional<Change> apply_link(const LinkEvent& e);
    std::optional<Change> apply_address(const AddressEvent& e);
    std::optional<Change> apply_route(const RouteEvent& e);
    std::optional<Change> apply_neighbour(const NeighbourEvent& e);

    std::map<int, Link> links_;
    std::unordered_map<std::string, int> by_name_;
    std::map<std::pair<int, IpPrefix>, Address> addresses_;
    std::unordered_map<IpAddress, int, AddressHash> local_;  // how many devices hold each address
    std::map<std::uint32_t, RouteTable> tables_;
    std::unordered_map<NeighbourKey, Neighbour, NeighbourKeyHash> neighbours_;
};

// Hash of an IP address, for the unordered containers of the model and the engine.
std::size_t hash_of(const IpAddress& a) noexcept;

}  // namespace dpo::model
