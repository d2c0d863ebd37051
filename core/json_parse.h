// JSON read from files (checkpoint headers, model and run configs) is parsed with its nesting
// bounded before anything is built: nlohmann copies, prints and destroys values recursively, so
// a value nested a few hundred thousand levels deep overflows the stack.
#pragma once
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace tdrop {

// Deeper than anything tdrop writes, shallow enough for any recursive walk of the value.
constexpr size_t kMaxJsonDepth = 64;

// The deepest nesting of arrays and objects in `text` (brackets inside strings do not count).
// One pass, linear in the text; it does not check that the text is valid JSON.
size_t json_nesting_depth(std::string_view text);

// Parses `text` in linear time. `what` names it in every error, e.g. "run/config.json" or
// "safetensors model.safetensors: header": "<what> nests deeper than 64 levels",
// "<what> is not valid JSON: ...".
nlohmann::json parse_json_bounded(std::string_view text, const std::string& what,
                                  size_t max_depth = kMaxJsonDepth);

}  // namespace tdrop
