// Atomic file writes: data goes to a fresh "<path>.tmp.XXXXXX", is fsync'ed, then renamed over
// <path>, so a crash at any moment leaves either the old file or the new one, never a torn one.
#pragma once
#include <string>
#include <string_view>

namespace tdrop {

void write_file_atomic(const std::string& path, std::string_view bytes);
// Reads a whole file; throws tdrop::Error naming the file when it is missing or unreadable.
std::string read_file(const std::string& path);

}  // namespace tdrop
