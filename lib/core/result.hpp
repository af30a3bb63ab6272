// SPDX-License-Identifier: GPL-2.0-or-later
#pragma once
// Expected failures are values: a Result holds either a T or an error E.
// C++20 has no std::expected (that is C++23), so this is the small subset we use.

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace dpo {

template <class E>
struct Unexpected {
    E error;
};

template <class E>
Unexpected<std::decay_t<E>> fail(E&& e) {
    return {std::forward<E>(e)};
}

template <class T, class E = std::string>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    template <class G>
    Result(Unexpected<G> u) : v_(std::in_place_index<1>, E(std::move(u.error))) {}

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    // Reading the wrong side is a bug in the caller, not an expected failure.
    T& value() & { assert(ok()); return std::get<0>(v_); }
    const T& value() const& { assert(ok()); return std::get<0>(v_); }
    T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const E& error() const& { assert(!ok()); return std::get<1>(v_); }
    E&& error() && { assert(!ok()); return std::get<1>(std::move(v_)); }

private:
    std::variant<T, E> v_;
};

// Result of an operation that yields nothing but may fail.
struct Done {};

}  // namespace dpo
