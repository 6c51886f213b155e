// Theory of operation.
//
// systemd-resolved keeps per-link DNS settings that a link manager (here: the
// tunnel) may set over D-Bus; resolvectl is its command line front end, and
// the per-link settings are dropped again by `resolvectl revert LINK`. The
// tunnel's responder only knows "<sandbox>.<domain>", so the link gets the
// routing-only domain "~<domain>" and default-route=false: resolved then
// sends exactly the names under <domain> to our server and nothing else.
//
// Commands run through run_program(): posix_spawnp with stdin/stdout on
// /dev/null and stderr on a pipe that is read to EOF before waitpid, so the
// error text of a failed command ends up in the exception. No shell is
// involved; arguments are passed as they are.
//
// The constructor applies the commands in order; on the first failure it runs
// the revert (best effort) and throws, so a half-made registration never
// outlives the constructor. The destructor reverts and logs a failure.
#include "cli/resolver_registration.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <spdlog/spdlog.h>
#include <string_view>
#include <system_error>
#include <utility>

extern char** environ;

namespace osh::cli {

namespace {

constexpr const char* kResolvedRunDir = "/run/systemd/resolve";
constexpr const char* kResolvectl = "resolvectl";
constexpr size_t kMaxStderr = 4096;  // bytes of stderr kept

// Closes an fd on scope exit.
class Fd {
 public:
  explicit Fd(int fd = -1) noexcept : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const noexcept { return fd_; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// posix_spawn_file_actions_t with its destroy.
class FileActions {
 public:
  FileActions() {
    if (int rc = posix_spawn_file_actions_init(&fa_); rc != 0)
      throw std::system_error(rc, std::generic_category(), "posix_spawn_file_actions_init");
  }
  ~FileActions() { posix_spawn_file_actions_destroy(&fa_); }
  FileActions(const FileActions&) = delete;
  FileActions& operator=(const FileActions&) = delete;
  posix_spawn_file_actions_t* get() noexcept { return &fa_; }

 private:
  posix_spawn_file_actions_t fa_;
};

void check_spawn(int rc, const char* what) {
  if (rc != 0) throw std::system_error(rc, std::generic_category(), what);
}

std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

// Runs argv; throws ResolverError naming the command if it fails.
void run_checked(const std::vector<std::string>& argv) {
  ProgramResult r;
  try {
    r = run_program(argv);
  } catch (const std::system_error& e) {
    throw ResolverError("`" + join(argv) + "` could not be started: " + e.what());
  }
  if (r.exit_code != 0) {
    std::string err = r.stderr_text;
    while (!err.empty() && (err.back() == '\n' || err.back() == '\r')) err.pop_back();
    throw ResolverError("`" + join(argv) + "` failed with exit status " +
                        std::to_string(r.exit_code) + (err.empty() ? "" : ": " + err));
  }
}

bool executable_in_path(const char* name) {
  const char* path = std::getenv("PATH");
  std::string_view rest = path != nullptr ? path : "/usr/bin:/bin";
  while (true) {
    const size_t colon = rest.find(':');
    std::string dir(rest.substr(0, colon));
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + name;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0)
      return true;
    if (colon == std::string_view::npos) return false;
    rest.remove_prefix(colon + 1);
  }
}

std::string strip_trailing_dots(std::string s) {
  while (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

}  // namespace

ProgramResult run_program(const std::vector<std::string>& argv) {
  if (argv.empty()) throw std::invalid_argument("run_program: empty argv");
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  Fd rd(p[0]);
  Fd wr(p[1]);

  FileActions fa;
  check_spawn(posix_spawn_file_actions_addopen(fa.get(), 0, "/dev/null", O_RDONLY, 0),
              "posix_spawn_file_actions_addopen");
  check_spawn(posix_spawn_file_actions_addopen(fa.get(), 1, "/dev/null", O_WRONLY, 0),
              "posix_spawn_file_actions_addopen");
  // dup2 onto 2 clears O_CLOEXEC on the child's stderr; both pipe ends
  // themselves close on exec.
  check_spawn(posix_spawn_file_actions_adddup2(fa.get(), wr.get(), 2),
              "posix_spawn_file_actions_adddup2");

  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, cargv[0], fa.get(), nullptr, cargv.data(), environ);
  if (rc != 0) throw std::system_error(rc, std::generic_category(), "posix_spawnp " + argv[0]);
  wr.reset();  // so that read() sees EOF when the child exits

  ProgramResult result;
  char buf[512];
  while (true) {
    const ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n > 0) {
      const size_t keep = std::min(static_cast<size_t>(n), kMaxStderr - result.stderr_text.size());
      result.stderr_text.append(buf, keep);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;  // EOF, or a read error: stop reading, still reap the child
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "waitpid");
  }
  if (WIFEXITED(status))
    result.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    result.exit_code = 128 + WTERMSIG(status);
  return result;
}

bool ResolverRegistration::available() {
  std::error_code ec;
  return std::filesystem::is_directory(kResolvedRunDir, ec) && executable_in_path(kResolvectl);
}

std::vector<std::vector<std::string>> ResolverRegistration::register_commands(
    const std::string& link, const std::vector<std::string>& dns_addresses,
    const std::string& domain) {
  std::vector<std::string> dns{kResolvectl, "dns", link};
  dns.insert(dns.end(), dns_addresses.begin(), dns_addresses.end());
  return {
      std::move(dns),
      {kResolvectl, "domain", link, "~" + strip_trailing_dots(domain)},
      {kResolvectl, "default-route", link, "false"},
  };
}

std::vector<std::string> ResolverRegistration::revert_command(const std::string& link) {
  return {kResolvectl, "revert", link};
}

ResolverRegistration::ResolverRegistration(std::string link,
                                           std::vector<std::string> dns_addresses,
                                           std::string domain)
    : link_(std::move(link)) {
  if (link_.empty()) throw std::invalid_argument("resolver registration: empty link name");
  if (dns_addresses.empty())
    throw std::invalid_argument("resolver registration: no DNS server address");
  if (strip_trailing_dots(domain).empty())
    throw std::invalid_argument("resolver registration: empty domain");
  if (!available()) {
    spdlog::debug("systemd-resolved not running; ~{} not registered on {}", domain, link_);
    return;
  }
  try {
    for (const auto& argv : register_commands(link_, dns_addresses, domain)) run_checked(argv);
  } catch (...) {
    try {
      run_checked(revert_command(link_));
    } catch (const std::exception& e) {
      spdlog::warn("undoing a partial resolver registration: {}", e.what());
    }
    throw;
  }
  active_ = true;
  spdlog::info("systemd-resolved: names under {} go to {} on {}", strip_trailing_dots(domain),
               join(dns_addresses), link_);
}

ResolverRegistration::~ResolverRegistration() {
  if (!active_) return;
  try {
    run_checked(revert_command(link_));
  } catch (const std::exception& e) {
    spdlog::error("removing the resolver registration: {}", e.what());
  }
}

}  // namespace osh::cli
