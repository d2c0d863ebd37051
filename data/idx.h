// Reader for IDX files, the container format of MNIST and Fashion-MNIST. Files may be
// gzip-compressed or plain; zlib detects which. Only the ubyte dtype (0x08) is supported,
// since that is all these data sets use.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tdrop {

struct IdxArray {
  std::vector<int64_t> dims;  // outermost first, each > 0
  std::vector<uint8_t> data;  // row-major, size == product of dims
};

// Throws tdrop::Error naming `path` when the file is missing, unreadable, malformed, truncated,
// has bytes after its data, or is a corrupt gzip stream. (Bytes after the end of a gzip stream
// that do not start another gzip member are ignored, as zlib's gzread ignores them; the data
// itself is checked by the stream's CRC.)
IdxArray read_idx(const std::string& path);

}  // namespace tdrop
