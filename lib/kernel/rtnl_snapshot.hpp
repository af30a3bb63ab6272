// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// A one-shot dump of the kernel's links, addresses, routes and neighbours through
// libnl-route-3, converted into the pure KernelState.

#include <string>

#include "core/kernel_state.hpp"
#include "core/result.hpp"

namespace dpo::kernel {

Result<KernelState> read_kernel_state();

}  // namespace dpo::kernel
