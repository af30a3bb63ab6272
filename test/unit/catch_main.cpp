// SPDX-License-Identifier: GPL-2.0-or-later
#define CATCH_CONFIG_MAIN
#include "core/gcc_workarounds.hpp"

// GCC 12 false positive (GCC PR 105562): -Wmaybe-uninitialized inside std::regex's
// automaton, which Catch2's implementation instantiates here; it shows with
// -fsanitize=address (the sanitizer build).
DPO_GCC_WARNING_OFF("-Wmaybe-uninitialized")
#include <catch2/catch.hpp>
DPO_GCC_WARNING_ON
