#include "data/idx.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"

namespace tdrop {
namespace {

// Largest payload accepted: enough for any IDX data set in use, small enough that a
// corrupt header cannot make us try to hold more than 2 GiB.
constexpr uint64_t kMaxElements = uint64_t{1} << 31;
// Payload is read in chunks so memory grows with the bytes actually present, not with
// what the header claims.
constexpr size_t kChunk = size_t{1} << 20;

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzPtr = std::unique_ptr<gzFile_s, GzCloser>;

std::string hex2(unsigned v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", v & 0xFFu);
  return buf;
}

// gzerror prefixes its message with "<fd:N>: " for a gzdopen'ed file; the caller names the
// file itself, so drop that.
std::string strip_fd(const char* msg) {
  std::string s = msg ? msg : "unknown zlib error";
  if (s.rfind("<fd:", 0) == 0) {
    const auto colon = s.find(": ");
    if (colon != std::string::npos) s.erase(0, colon + 2);
  }
  return s;
}

// Reads up to n bytes; returns fewer only at end of stream. gzread reports corrupt
// compressed data as -1, which becomes an error carrying zlib's own description.
size_t read_some(gzFile f, uint8_t* dst, size_t n, const std::string& path) {
  size_t got = 0;
  while (got < n) {
    const unsigned want = static_cast<unsigned>(std::min(n - got, kChunk));
    const int r = gzread(f, dst + got, want);
    if (r < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      fail(path, ": corrupt or unreadable data: ",
           errnum == Z_ERRNO ? std::string(std::strerror(errno)) : strip_fd(msg));
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

// A short read may hide a gzip stream cut off mid-way; say so when zlib noticed.
std::string gz_note(gzFile f) {
  int errnum = 0;
  const char* msg = gzerror(f, &errnum);
  return errnum == Z_OK ? "" : " (gzip: " + strip_fd(msg) + ")";
}

GzPtr open_gz(const std::string& path) {
  // open() first so a missing or unreadable file reports a reliable errno.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TDROP_CHECK(fd >= 0, "cannot open ", path, ": ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("cannot read ", path, ": not a regular file");
  }
  gzFile f = gzdopen(fd, "rb");  // takes ownership of fd on success
  if (!f) {
    ::close(fd);
    fail("cannot open ", path, ": zlib could not allocate a reader");
  }
  return GzPtr(f);
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  GzPtr gz = open_gz(path);
  gzFile f = gz.get();

  uint8_t magic[4];
  const size_t nmagic = read_some(f, magic, 4, path);
  TDROP_CHECK(nmagic > 0, path, ": empty file, expected an IDX header", gz_note(f));
  TDROP_CHECK(nmagic == 4, path, ": truncated IDX header: expected 4 magic bytes, got ", nmagic,
              gz_note(f));
  TDROP_CHECK(magic[0] == 0 && magic[1] == 0, path, ": bad IDX magic ", hex2(magic[0]), " ",
              hex2(magic[1]), " ", hex2(magic[2]), " ", hex2(magic[3]),
              " (expected 0x00 0x00 <dtype> <ndim>)");
  TDROP_CHECK(magic[2] == 0x08, "unsupported IDX dtype ", hex2(magic[2]), " in ", path,
              " (only ubyte 0x08 is supported)");
  const unsigned ndim = magic[3];
  TDROP_CHECK(ndim >= 1 && ndim <= 4, path, ": IDX ndim ", ndim, " out of range [1, 4]");

  uint8_t raw[16];
  const size_t ndims_bytes = read_some(f, raw, 4 * ndim, path);
  TDROP_CHECK(ndims_bytes == 4 * ndim, path, ": truncated IDX header: expected ", 4 * ndim,
              " bytes of dims, got ", ndims_bytes, gz_note(f));

  IdxArray out;
  for (unsigned i = 0; i < ndim; ++i) {
    const uint8_t* b = raw + 4 * i;  // big-endian uint32
    out.dims.push_back((int64_t{b[0]} << 24) | (int64_t{b[1]} << 16) | (int64_t{b[2]} << 8) | b[3]);
  }
  uint64_t total = 1;
  for (unsigned i = 0; i < ndim; ++i) {
    TDROP_CHECK(out.dims[i] > 0, path, ": IDX dim ", i, " is 0 in dims ", shape_str(out.dims));
    // total <= 2^31 and each dim < 2^32 before this multiply, so it cannot overflow 64 bits.
    total *= static_cast<uint64_t>(out.dims[i]);
    TDROP_CHECK(total <= kMaxElements, path, ": IDX dims ", shape_str(out.dims),
                " exceed the limit of ", kMaxElements, " elements");
  }

  const size_t n = static_cast<size_t>(total);
  size_t got = 0;
  while (got < n) {
    const size_t want = std::min(n - got, kChunk);
    out.data.resize(got + want);
    const size_t r = read_some(f, out.data.data() + got, want, path);
    got += r;
    if (r < want) break;
  }
  TDROP_CHECK(got == n, path, ": truncated: expected ", n, " bytes of data, got ", got,
              gz_note(f));

  uint8_t extra;
  TDROP_CHECK(read_some(f, &extra, 1, path) == 0, path, ": trailing bytes after the ", n,
              " bytes of data for dims ", shape_str(out.dims));
  // zlib reports a gzip stream that ends early (its checksum trailer cut off, so the data was
  // never verified) as a plain end of file; it leaves the reason in gzerror.
  int zerr = Z_OK;
  const char* zmsg = gzerror(f, &zerr);
  TDROP_CHECK(zerr == Z_OK, path, ": truncated gzip stream after the ", n,
              " bytes of data (gzip: ", strip_fd(zmsg), ")");
  return out;
}

}  // namespace tdrop
