// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// A one-shot dump of the kernel's links, addresses, routes and neighbours through
// libnl-route-3, converted into the pure KernelState.

#include <string>

#include "core/model/kernel_model.hpp"
#include "core/model/kernel_state.hpp"
#include "core/result.hpp"
#include "kernel/route_store.hpp"

struct nl_cache;
struct nl_object;

namespace dpo::kernel {

Result<KernelState> read_kernel_state();
// The same conversion over caches someone else keeps (the watcher's).
KernelState state_from_caches(nl_cache* links, nl_cache* addrs, const RouteStore& routes, nl_cache* neigh);
// One cache object (a link, address, route or neighbour) as the model's event: its new
// state, or its removal. Nothing for objects the model does not keep (a bridge port's
// AF_BRIDGE link object, an FDB entry, a route of another family).
std::optional<model::Event> event_of(nl_object* o, bool removed);

}  // namespace dpo::kernel
