#include "core/json_parse.h"

#include <algorithm>

#include "core/error.h"
#include "core/safetensors.h"

namespace tdrop {

size_t json_nesting_depth(std::string_view text) {
  size_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character, a quote included, does not end the string
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;  // an unbalanced bracket is the parser's error to report
    }
  }
  return deepest;
}

// No parser callback: nlohmann's callback parser rescans the parent container at every closing
// bracket, which made a header of 100k entries take minutes. The depth is checked first instead.
nlohmann::json parse_json_bounded(std::string_view text, const std::string& what,
                                  size_t max_depth) {
  TDROP_CHECK(json_nesting_depth(text) <= max_depth, what, " nests deeper than ", max_depth,
              " levels");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(what, " is not valid JSON: ", printable(e.what()));
  }
}

}  // namespace tdrop
