// Shared by the libFuzzer targets: a memory-backed file the readers can open by path, and the
// checks every error message must pass (one line, naming the file it is about).
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace tdrop::fuzz {

[[noreturn]] inline void bug(const std::string& what) {
  std::fprintf(stderr, "fuzz invariant violated: %s\n", what.c_str());
  std::abort();
}

// A file that lives in memory (memfd), reachable by path through /proc/self/fd, and rewritten in
// place for each input: no disk traffic and nothing left behind.
class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(::memfd_create(name, MFD_CLOEXEC)) {
    if (fd_ < 0) bug("memfd_create failed");
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  void assign(std::string_view bytes) {
    if (::ftruncate(fd_, 0) != 0) bug("ftruncate failed");
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::pwrite(fd_, bytes.data() + done, bytes.size() - done,
                                 static_cast<off_t>(done));
      if (n <= 0) bug("pwrite failed");
      done += static_cast<size_t>(n);
    }
  }
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

// A private directory whose entries are symlinks to MemFiles, for readers that take a directory
// and fixed file names. Removed at exit.
class LinkDir {
 public:
  LinkDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tdrop_fuzz_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) bug("mkdtemp failed");
    dir_ = tmpl;
  }
  ~LinkDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  void link(const std::string& name, const MemFile& target) {
    std::filesystem::create_symlink(target.path(), std::filesystem::path(dir_) / name);
  }
  const std::string& path() const { return dir_; }

 private:
  std::string dir_;
};

// Every tdrop::Error a reader raises must be one line that names the file it is about.
inline void check_message(const Error& e, const std::vector<std::string>& any_of_names) {
  const std::string_view msg = e.what();
  if (msg.empty()) bug("empty error message");
  if (msg.find('\n') != std::string_view::npos || msg.find('\r') != std::string_view::npos)
    bug("error message spans several lines: " + std::string(msg));
  for (const std::string& n : any_of_names)
    if (msg.find(n) != std::string_view::npos) return;
  bug("error message does not name the file: " + std::string(msg));
}

}  // namespace tdrop::fuzz
