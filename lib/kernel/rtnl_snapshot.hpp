// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// A one-shot dump of the kernel's links, addresses, routes and neighbours through
// libnl-route-3, converted into the pure KernelState.

#include <string>

#include "core/model/kernel_state.hpp"
#include "core/result.hpp"

struct nl_cache;

namespace dpo::kernel {

Result<KernelState> read_kernel_state();
// The same conversion over caches someone else keeps (the watcher's).
KernelState state_from_caches(nl_cache* links, nl_cache* addrs, nl_cache* routes, nl_cache* neigh);

}  // namespace dpo::kernel
