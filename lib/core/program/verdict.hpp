// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Kernel answers, classified once: what the engine does next depends only on the verdict.

#include <cstdint>

#include "core/program/backend.hpp"

namespace dpo::program {

enum class Verdict : std::uint8_t {
    Done,       // the kernel holds what was asked (a delete of something gone is done too)
    Missing,    // a replace found no filter at its handle: add it again
    Taken,      // an add found its handle taken: add it at another
    Retry,      // a passing condition (memory, a busy device, a device being re-made): try again later
    Permanent,  // the kernel will not take this content: keep it aside until something it depends on changes
    Lost,       // no answer: only an audit can tell
};

Verdict classify(Change::Kind kind, const ChangeResult& r);
const char* to_string(Verdict v);

}  // namespace dpo::program
