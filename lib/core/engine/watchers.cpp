// SPDX-License-Identifier: GPL-2.0-or-later
#include "watchers.hpp"

#include <string_view>

#include "core/model/kernel_model.hpp"

namespace dpo::engine {

namespace {
std::size_t mix(std::size_t h, std::size_t v) { return h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2)); }

struct Hasher {
    std::size_t operator()(const compile::input::LinkAt& i) const { return static_cast<std::size_t>(i.ifindex); }
    std::size_t operator()(const compile::input::LinkNamed& i) const { return std::hash<std::string_view>{}(i.str()); }
    std::size_t operator()(const compile::input::Local& i) const { return model::hash_of(i.address); }
    std::size_t operator()(const compile::input::Lpm& i) const { return mix(i.table, model::hash_of(i.address)); }
    std::size_t operator()(const compile::input::Neighbour& i) const {
        return mix(static_cast<std::size_t>(i.ifindex), model::hash_of(i.address));
    }
    std::size_t operator()(const compile::input::Resolved& i) const {
        return mix(static_cast<std::size_t>(i.ifindex) + 7, model::hash_of(i.address));
    }
    std::size_t operator()(const compile::input::Egress& i) const { return static_cast<std::size_t>(i.ifindex); }
    std::size_t operator()(const compile::input::Subscriber& i) const { return model::hash_of(i.address); }
};
}  // namespace

std::size_t Watchers::InputHash::operator()(const compile::Input& in) const noexcept {
    return mix(in.index(), std::visit(Hasher{}, in));
}

void Watchers::add(const compile::Input& in, KeyId k) {
    bool fresh;
    if (const auto* lpm = std::get_if<compile::input::Lpm>(&in)) fresh = lpm_[{lpm->table, lpm->address}].insert(k).second;
    else fresh = plain_[in].insert(k).second;
    edges_ += fresh;
}

void Watchers::remove(const compile::Input& in, KeyId k) {
    if (const auto* lpm = std::get_if<compile::input::Lpm>(&in)) {
        const auto it = lpm_.find({lpm->table, lpm->address});
        if (it == lpm_.end()) return;
        edges_ -= it->second.erase(k);
        if (it->second.empty()) lpm_.erase(it);
        return;
    }
    const auto it = plain_.find(in);
    if (it == plain_.end()) return;
    edges_ -= it->second.erase(k);
    if (it->second.empty()) plain_.erase(it);
}

IpAddress Watchers::first_of(const IpPrefix& p) {
    IpAddress a = p.address;
    for (unsigned bit = p.length; bit < a.size() * 8; ++bit) a.bytes[bit / 8] &= static_cast<std::uint8_t>(~(0x80 >> (bit % 8)));
    return a;
}

IpAddress Watchers::last_of(const IpPrefix& p) {
    IpAddress a = p.address;
    for (unsigned bit = p.length; bit < a.size() * 8; ++bit) a.bytes[bit / 8] |= static_cast<std::uint8_t>(0x80 >> (bit % 8));
    return a;
}

}  // namespace dpo::engine
