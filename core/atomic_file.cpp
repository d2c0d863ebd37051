#include "core/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <new>
#include <vector>

#include "core/error.h"

namespace tdrop {

void write_file_atomic(const std::string& path, std::string_view bytes) {
  // A fresh name per write (mkstemp opens it with O_EXCL): two writers of one path never share a
  // temp file, and a link planted at the name is not followed.
  std::vector<char> name(path.begin(), path.end());
  for (char c : std::string_view(".tmp.XXXXXX")) name.push_back(c);
  name.push_back('\0');
  const int fd = ::mkostemp(name.data(), O_CLOEXEC);
  const std::string tmp(name.data());
  TDROP_CHECK(fd >= 0, "cannot create ", tmp, ": ", std::strerror(errno));
  auto give_up = [&](const char* what, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("cannot ", what, " ", tmp, ": ", std::strerror(err));
  };
  if (::fchmod(fd, 0644) != 0) give_up("set the permissions of", errno);  // mkstemp made 0600
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) give_up("write", errno);
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) give_up("flush", errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot flush ", tmp, ": ", std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot rename ", tmp, " to ", path, ": ", std::strerror(err));
  }
  // Make the rename itself durable: fsync the directory that holds the file.
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string read_file(const std::string& path) {
  // Checked before opening: opening a FIFO blocks until a writer comes, and a device such as
  // /dev/zero never ends.
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  TDROP_CHECK(!ec, "cannot open ", path, ": ", ec.message());
  TDROP_CHECK(std::filesystem::is_regular_file(status), "cannot read ", path,
              ": not a regular file");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TDROP_CHECK(fd >= 0, "cannot open ", path, ": ", std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  TDROP_CHECK(::fstat(fd, &st) == 0, "cannot read ", path, ": ", std::strerror(errno));
  // Every read is checked: a failing one is an error naming the file, never a short result
  // that a parser would then call truncated.
  std::string out;
  try {
    out.reserve(static_cast<size_t>(st.st_size));
    char buf[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      TDROP_CHECK(n >= 0, "error while reading ", path, ": ", std::strerror(errno));
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  } catch (const std::bad_alloc&) {
    fail("cannot read ", path, ": its ", static_cast<long long>(st.st_size),
         " bytes do not fit in memory");
  }
  return out;
}

}  // namespace tdrop
