// Theory of operation.
//
// LinkConfig talks rtnetlink through one libnl socket (NETLINK_ROUTE) owned by
// its Impl. Each public change is one request/ack round trip:
//   set_mtu      RTM_NEWLINK (libnl falls back to RTM_SETLINK) with IFLA_MTU
//   set_up       RTM_NEWLINK with ifi_change = IFF_UP
//   add_address  RTM_NEWADDR, NLM_F_CREATE|NLM_F_EXCL, IFA_FLAGS for NODAD /
//                NOPREFIXROUTE (IPv6 first gets disable_ipv6 = 0 via /proc)
//   add_route    RTM_NEWROUTE, NLM_F_CREATE|NLM_F_EXCL, main table, scope
//                link, proto static, one nexthop = this ifindex
// After the kernel acknowledged a change, its inverse is pushed on `undo`;
// rollback() pops and runs them newest first, so teardown mirrors setup
// exactly (OpenVPN 3 tunnetlink create/destroy lists). NLM_F_EXCL makes sure
// we never record the removal of something we did not create.
//
// Errors: libnl folds kernel errno values into its own NLE_* codes and loses
// detail (ENETDOWN becomes "Unspecific failure"). A custom error callback on
// the socket therefore records the kernel's errno and, with NETLINK_EXT_ACK
// enabled, its extended-ack message ("Invalid prefix for given prefix
// length"); TunError is built from those. Undo steps report errno the same
// way; ENODEV/ESRCH/ENOENT/EADDRNOTAVAIL mean "already gone" and are ignored,
// since closing the TUN descriptor removes the link with everything on it.
//
// Limits: one socket per LinkConfig, not thread-safe, blocking calls. The
// socket lives in the netns that was current at construction.
#include "tun/link_config.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/addr.h>
#include <netlink/errno.h>
#include <netlink/handlers.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <vector>

#include "common/undo_stack.h"
#include "tun/scoped_fd.h"
#include "tun/tun_log.h"

namespace osh::tun {

spdlog::logger& tun_log() {
  static const std::shared_ptr<spdlog::logger> logger = [] {
    if (auto existing = spdlog::get("tun")) return existing;
    auto created = spdlog::default_logger()->clone("tun");
    try {
      spdlog::register_logger(created);
    } catch (const spdlog::spdlog_ex&) {
      if (auto existing = spdlog::get("tun")) return existing;  // lost a race
    }
    return created;
  }();
  return *logger;
}

namespace {

template <typename T, void (*Free)(T*)>
struct NlDeleter {
  void operator()(T* p) const noexcept {
    if (p != nullptr) Free(p);
  }
};
using SockPtr = std::unique_ptr<nl_sock, NlDeleter<nl_sock, nl_socket_free>>;
using LinkPtr = std::unique_ptr<rtnl_link, NlDeleter<rtnl_link, rtnl_link_put>>;
using AddrPtr = std::shared_ptr<rtnl_addr>;
using RoutePtr = std::shared_ptr<rtnl_route>;
using NlAddrPtr = std::unique_ptr<nl_addr, NlDeleter<nl_addr, nl_addr_put>>;

// Inverse of libnl's nl_syserr2nlerr() for the codes it maps one to one.
int nlerr_to_errno(int nlerr) {
  switch (nlerr < 0 ? -nlerr : nlerr) {
    case NLE_NODEV: return ENODEV;
    case NLE_EXIST: return EEXIST;
    case NLE_OBJ_NOTFOUND: return ENOENT;
    case NLE_PERM: return EPERM;
    case NLE_NOACCESS: return EACCES;
    case NLE_INVAL: return EINVAL;
    case NLE_BUSY: return EBUSY;
    case NLE_RANGE: return ERANGE;
    case NLE_NOADDR: return EADDRNOTAVAIL;
    case NLE_OPNOTSUPP: return EOPNOTSUPP;
    case NLE_AF_NOSUPPORT: return EAFNOSUPPORT;
    case NLE_NOMEM: return ENOMEM;
    case NLE_AGAIN: return EAGAIN;
    case NLE_MSGSIZE: return EMSGSIZE;
    default: return 0;
  }
}

bool is_gone(int err) {
  return err == ENODEV || err == ESRCH || err == ENOENT || err == EADDRNOTAVAIL;
}

// The outcome of one netlink request: 0, or the kernel's errno (positive) and
// extended-ack text, or a libnl-local error.
struct NlStatus {
  int nlerr = 0;        // libnl return code (negative NLE_*), 0 on success
  int sys_errno = 0;    // errno reported by the kernel, 0 if none
  std::string ext_msg;  // kernel extended-ack message, may be empty

  bool ok() const { return nlerr >= 0; }
  // errno for TunError: the kernel's if the error callback saw it (libnl
  // bypasses the callback on some paths, e.g. rtnl_link_get_kernel), else the
  // errno that libnl folded into `nlerr`, else 0.
  int error_code() const {
    if (sys_errno != 0) return sys_errno;
    return nlerr_to_errno(nlerr);
  }
  // "File exists", "Invalid argument (Invalid prefix for given prefix length)",
  // or the libnl text when no errno is known.
  std::string reason() const {
    const int e = error_code();
    std::string r = e != 0 ? std::strerror(e) : nl_geterror(nlerr);
    if (!ext_msg.empty()) r += " (" + ext_msg + ")";
    return r;
  }
};

// Extracts NLMSGERR_ATTR_MSG from an error message that carries ack TLVs.
// `e` points into the received message, right after its nlmsghdr.
std::string ext_ack_message(const nlmsgerr* e) {
  const auto* hdr = reinterpret_cast<const nlmsghdr*>(
      reinterpret_cast<const char*>(e) - NLMSG_HDRLEN);
  if ((hdr->nlmsg_flags & NLM_F_ACK_TLVS) == 0) return {};
  std::size_t payload = sizeof(nlmsgerr);
  if ((hdr->nlmsg_flags & NLM_F_CAPPED) == 0 && e->msg.nlmsg_len >= NLMSG_HDRLEN)
    payload += e->msg.nlmsg_len - NLMSG_HDRLEN;  // the echoed request
  std::size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(payload);
  const char* base = reinterpret_cast<const char*>(hdr);
  while (off + sizeof(nlattr) <= hdr->nlmsg_len) {
    const auto* a = reinterpret_cast<const nlattr*>(base + off);
    if (a->nla_len < sizeof(nlattr) || off + a->nla_len > hdr->nlmsg_len) break;
    if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
      const char* s = base + off + NLA_HDRLEN;
      return std::string(s, strnlen(s, a->nla_len - NLA_HDRLEN));
    }
    off += NLA_ALIGN(a->nla_len);
  }
  return {};
}

// A connected NETLINK_ROUTE socket whose error callback fills `last`.
class RouteSocket {
 public:
  RouteSocket() : sk_(nl_socket_alloc()) {
    if (!sk_) throw TunError("allocate netlink socket", ENOMEM);
    if (int rc = nl_connect(sk_.get(), NETLINK_ROUTE); rc < 0)
      throw TunError("connect NETLINK_ROUTE socket", 0, nl_geterror(rc));
    const int fd = nl_socket_get_fd(sk_.get());
    const int one = 1;
    // Best effort: older kernels lack these; errors then have no ext message.
    (void)setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
    (void)setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    nl_socket_modify_err_cb(sk_.get(), NL_CB_CUSTOM, &RouteSocket::on_error, this);
  }
  RouteSocket(const RouteSocket&) = delete;
  RouteSocket& operator=(const RouteSocket&) = delete;

  nl_sock* get() const { return sk_.get(); }

  // Runs one libnl request and returns its status.
  template <typename Fn>
  NlStatus run(Fn&& request) {
    last_ = NlStatus{};
    const int rc = request(sk_.get());
    NlStatus st = std::move(last_);
    st.nlerr = rc < 0 ? rc : 0;
    if (rc >= 0) {
      st.sys_errno = 0;  // e.g. a NEWLINK->SETLINK retry that then succeeded
      st.ext_msg.clear();
    }
    return st;
  }

 private:
  static int on_error(sockaddr_nl*, nlmsgerr* e, void* arg) {
    auto* self = static_cast<RouteSocket*>(arg);
    self->last_.sys_errno = -e->error;
    self->last_.ext_msg = ext_ack_message(e);
    return NL_STOP;  // libnl then returns -nl_syserr2nlerr(e->error)
  }

  SockPtr sk_;
  NlStatus last_;
};

NlAddrPtr make_nl_addr(const IpAddress& a, uint8_t prefix_len) {
  NlAddrPtr p(nl_addr_build(a.family, a.bytes.data(), a.size()));
  if (!p) throw TunError("build netlink address " + a.to_string(), ENOMEM);
  nl_addr_set_prefixlen(p.get(), prefix_len);
  return p;
}

std::string ipv6_sysctl_path(const std::string& ifname) {
  return "/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6";
}

// Reads a small sysctl file; nullopt if it does not exist.
std::optional<std::string> read_sysctl(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    throw TunError("read " + path, errno);
  }
  char buf[64];
  const ssize_t n = ::read(fd.get(), buf, sizeof buf);
  if (n < 0) throw TunError("read " + path, errno);
  std::string s(buf, static_cast<std::size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Writes a sysctl value; returns 0 or errno.
int write_sysctl(const std::string& path, const std::string& value) {
  ScopedFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errno;
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
    return errno != 0 ? errno : EIO;
  return 0;
}

}  // namespace

struct LinkConfig::Impl {
  int ifindex = 0;
  std::string name;
  RouteSocket sock;
  osh::UndoStack undo;  // common/undo_stack.h, as `up` uses

  /// Records how to undo one change, @what e.g. "delete address
  /// 198.18.0.1/16 from osh0". Run by rollback(): a failure is logged (a
  /// change that is already gone, e.g. with the link, only at debug level).
  void record(std::string what, std::function<NlStatus()> run) {
    undo.push(what, [what, run = std::move(run)] {
      const NlStatus st = run();
      if (st.ok()) {
        tun_log().debug("{}: done", what);
      } else if (is_gone(st.error_code())) {
        tun_log().debug("{}: already gone ({})", what, st.reason());
      } else {
        tun_log().warn("{}: {}", what, st.reason());
      }
    });
  }

  [[noreturn]] void fail(const std::string& what, const NlStatus& st) const {
    throw TunError(what, st.error_code(), st.reason());
  }

  LinkPtr get_link(const std::string& what) {
    rtnl_link* raw = nullptr;
    NlStatus st = sock.run([&](nl_sock* sk) { return rtnl_link_get_kernel(sk, ifindex, nullptr, &raw); });
    LinkPtr link(raw);
    if (!st.ok()) fail(what, st);
    return link;
  }

  // Applies `change` to the link (only the attributes set in it).
  NlStatus change_link(rtnl_link* change) {
    return sock.run([&](nl_sock* sk) {
      LinkPtr orig(rtnl_link_alloc());
      if (!orig) return -NLE_NOMEM;
      rtnl_link_set_ifindex(orig.get(), ifindex);
      return rtnl_link_change(sk, orig.get(), change, 0);
    });
  }

  NlStatus set_mtu_raw(uint32_t bytes) {
    LinkPtr change(rtnl_link_alloc());
    if (!change) return NlStatus{-NLE_NOMEM, ENOMEM, {}};
    rtnl_link_set_mtu(change.get(), bytes);
    return change_link(change.get());
  }

  NlStatus set_txqlen_raw(uint32_t packets) {
    LinkPtr change(rtnl_link_alloc());
    if (!change) return NlStatus{-NLE_NOMEM, ENOMEM, {}};
    rtnl_link_set_txqlen(change.get(), packets);
    return change_link(change.get());
  }

  NlStatus set_updown_raw(bool up) {
    LinkPtr change(rtnl_link_alloc());
    if (!change) return NlStatus{-NLE_NOMEM, ENOMEM, {}};
    if (up)
      rtnl_link_set_flags(change.get(), IFF_UP);
    else
      rtnl_link_unset_flags(change.get(), IFF_UP);
    return change_link(change.get());
  }

  // The rtnl_addr for RTM_NEWADDR/RTM_DELADDR of @p on this link.
  AddrPtr build_addr(const IpPrefix& p, AddrFlags flags, const std::string& what) const {
    if (!p.addr.is_v4() && !p.addr.is_v6()) throw TunError(what, EAFNOSUPPORT);
    AddrPtr addr(rtnl_addr_alloc(), rtnl_addr_put);
    if (!addr) throw TunError(what, ENOMEM);
    rtnl_addr_set_ifindex(addr.get(), ifindex);
    NlAddrPtr local = make_nl_addr(p.addr, p.len);
    if (int rc = rtnl_addr_set_local(addr.get(), local.get()); rc < 0)
      throw TunError(what, 0, nl_geterror(rc));
    rtnl_addr_set_prefixlen(addr.get(), p.len);
    unsigned ifa_flags = 0;
    if (flags.nodad && p.addr.is_v6()) ifa_flags |= IFA_F_NODAD;
    if (flags.noprefixroute) ifa_flags |= IFA_F_NOPREFIXROUTE;
    if (ifa_flags != 0) rtnl_addr_set_flags(addr.get(), ifa_flags);
    return addr;
  }

  // The rtnl_route for a main-table, scope-link unicast route to @dst (a
  // network) through this link, with routing protocol @proto.
  RoutePtr build_route(const IpPrefix& dst, uint8_t proto, const std::string& what) const {
    if (!dst.addr.is_v4() && !dst.addr.is_v6()) throw TunError(what, EAFNOSUPPORT);
    RoutePtr route(rtnl_route_alloc(), rtnl_route_put);
    if (!route) throw TunError(what, ENOMEM);
    NlAddrPtr nl_dst = make_nl_addr(dst.addr, dst.len);
    rtnl_route_set_family(route.get(), static_cast<uint8_t>(dst.addr.family));
    if (int rc = rtnl_route_set_dst(route.get(), nl_dst.get()); rc < 0)
      throw TunError(what, 0, nl_geterror(rc));
    rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
    rtnl_route_set_scope(route.get(), RT_SCOPE_LINK);
    rtnl_route_set_protocol(route.get(), proto);
    rtnl_route_set_type(route.get(), RTN_UNICAST);
    rtnl_nexthop* nh = rtnl_route_nh_alloc();
    if (nh == nullptr) throw TunError(what, ENOMEM);
    rtnl_route_nh_set_ifindex(nh, ifindex);
    rtnl_route_add_nexthop(route.get(), nh);  // the route owns nh from here
    return route;
  }

  // Sets disable_ipv6 = 0 on this link if it is 1, recording the undo.
  // Sets disable_ipv6 = 0 if the sysctl exists and says otherwise. @undo:
  // record the step that restores the old value (add_address), or not
  // (ensure_address: a repair records nothing). Return: true if it changed.
  bool enable_ipv6(bool undo) {
    const std::string path = ipv6_sysctl_path(name);
    const auto value = read_sysctl(path);
    if (!value || *value == "0") return false;  // no IPv6 sysctl, or already enabled
    if (int err = write_sysctl(path, "0"); err != 0)
      throw TunError("enable IPv6 on " + name + " (write 0 to " + path + ")", err);
    tun_log().debug("{}: set disable_ipv6 = 0 (was {})", name, *value);
    if (!undo) return true;
    record("restore " + path + " to " + *value, [path, old = *value] {
      NlStatus st;
      st.sys_errno = write_sysctl(path, old);
      st.nlerr = st.sys_errno != 0 ? -NLE_FAILURE : 0;
      return st;
    });
    return true;
  }
};

LinkConfig::LinkConfig(int ifindex) : impl_(std::make_unique<Impl>()) {
  impl_->ifindex = ifindex;
  LinkPtr link = impl_->get_link("look up link index " + std::to_string(ifindex));
  const char* n = rtnl_link_get_name(link.get());
  impl_->name = n != nullptr ? n : std::to_string(ifindex);
}

LinkConfig::~LinkConfig() { rollback(); }

LinkConfig::LinkConfig(LinkConfig&&) noexcept = default;

LinkConfig& LinkConfig::operator=(LinkConfig&& other) noexcept {
  if (this != &other) {
    rollback();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

const std::string& LinkConfig::name() const { return impl_->name; }
int LinkConfig::ifindex() const { return impl_->ifindex; }

std::size_t LinkConfig::pending_undo_steps() const noexcept {
  return impl_ ? impl_->undo.size() : 0;
}

void LinkConfig::set_mtu(uint32_t bytes) {
  Impl& im = *impl_;
  const std::string what = "set MTU " + std::to_string(bytes) + " on " + im.name;
  LinkPtr link = im.get_link(what);
  const uint32_t old = rtnl_link_get_mtu(link.get());
  if (old == bytes) return;
  if (NlStatus st = im.set_mtu_raw(bytes); !st.ok()) im.fail(what, st);
  tun_log().debug("{}: MTU {} -> {}", im.name, old, bytes);
  im.record("restore MTU " + std::to_string(old) + " on " + im.name,
            [&im, old] { return im.set_mtu_raw(old); });
}

void LinkConfig::set_txqueuelen(uint32_t packets) {
  Impl& im = *impl_;
  const std::string what = "set txqueuelen " + std::to_string(packets) + " on " + im.name;
  LinkPtr link = im.get_link(what);
  const uint32_t old = rtnl_link_get_txqlen(link.get());
  if (old == packets) return;
  if (NlStatus st = im.set_txqlen_raw(packets); !st.ok()) im.fail(what, st);
  im.record("restore txqueuelen " + std::to_string(old) + " on " + im.name,
            [&im, old] { return im.set_txqlen_raw(old); });
}

void LinkConfig::set_up() {
  Impl& im = *impl_;
  const std::string what = "set " + im.name + " up";
  LinkPtr link = im.get_link(what);
  if ((rtnl_link_get_flags(link.get()) & IFF_UP) != 0) return;
  if (NlStatus st = im.set_updown_raw(true); !st.ok()) im.fail(what, st);
  tun_log().debug("{}: up", im.name);
  im.record("set " + im.name + " down", [&im] { return im.set_updown_raw(false); });
}

void LinkConfig::add_address(const IpPrefix& p, AddrFlags flags) {
  Impl& im = *impl_;
  const std::string what = "add address " + p.to_string() + " to " + im.name;
  if (!p.addr.is_v4() && !p.addr.is_v6()) throw TunError(what, EAFNOSUPPORT);
  if (p.addr.is_v6()) im.enable_ipv6(/*undo=*/true);
  AddrPtr addr = im.build_addr(p, flags, what);
  NlStatus st = im.sock.run([&](nl_sock* sk) { return rtnl_addr_add(sk, addr.get(), NLM_F_EXCL); });
  if (!st.ok()) im.fail(what, st);
  tun_log().debug("{}: added address {}", im.name, p.to_string());
  im.record("delete address " + p.to_string() + " from " + im.name, [&im, addr] {
    return im.sock.run([&](nl_sock* sk) { return rtnl_addr_delete(sk, addr.get(), 0); });
  });
}

void LinkConfig::add_route(const IpPrefix& dst_in) {
  Impl& im = *impl_;
  const IpPrefix dst = dst_in.network();
  const std::string what = "add route " + dst.to_string() + " dev " + im.name;
  RoutePtr route = im.build_route(dst, RTPROT_STATIC, what);
  NlStatus st = im.sock.run([&](nl_sock* sk) { return rtnl_route_add(sk, route.get(), NLM_F_EXCL); });
  if (!st.ok()) im.fail(what, st);
  tun_log().debug("{}: added route {}", im.name, dst.to_string());
  im.record("delete route " + dst.to_string() + " dev " + im.name, [&im, route] {
    return im.sock.run([&](nl_sock* sk) { return rtnl_route_delete(sk, route.get(), 0); });
  });
}

bool LinkConfig::ensure_up() {
  Impl& im = *impl_;
  const std::string what = "set " + im.name + " up again";
  LinkPtr link = im.get_link(what);
  if ((rtnl_link_get_flags(link.get()) & IFF_UP) != 0) return false;
  if (NlStatus st = im.set_updown_raw(true); !st.ok()) im.fail(what, st);
  return true;
}

bool LinkConfig::ensure_address(const IpPrefix& p, AddrFlags flags) {
  Impl& im = *impl_;
  const std::string what = "add address " + p.to_string() + " to " + im.name + " again";
  // disable_ipv6 = 1 (set by someone else) removed the address and makes the
  // kernel refuse it (EACCES); turn IPv6 back on first, recording nothing.
  if (p.addr.is_v6() && im.enable_ipv6(/*undo=*/false))
    tun_log().debug("{}: IPv6 was disabled on the link; enabled it again", im.name);
  AddrPtr addr = im.build_addr(p, flags, what);
  NlStatus st = im.sock.run([&](nl_sock* sk) { return rtnl_addr_add(sk, addr.get(), NLM_F_EXCL); });
  if (st.ok()) return true;
  if (st.error_code() == EEXIST) return false;
  im.fail(what, st);
}

bool LinkConfig::ensure_prefix_route(const IpPrefix& p) {
  Impl& im = *impl_;
  const IpPrefix dst = p.network();
  const std::string what = "add route " + dst.to_string() + " dev " + im.name + " again";
  RoutePtr route = im.build_route(dst, RTPROT_KERNEL, what);
  NlAddrPtr src;
  if (p.addr.is_v4()) {
    src = make_nl_addr(p.addr, 32);
    if (int rc = rtnl_route_set_pref_src(route.get(), src.get()); rc < 0)
      throw TunError(what, 0, nl_geterror(rc));
  } else {
    rtnl_route_set_priority(route.get(), 256);  // IP6_RT_PRIO_ADDRCONF (include/net/addrconf.h)
  }
  NlStatus st = im.sock.run([&](nl_sock* sk) { return rtnl_route_add(sk, route.get(), NLM_F_EXCL); });
  if (st.ok()) return true;
  if (st.error_code() == EEXIST) return false;
  im.fail(what, st);
}

void LinkConfig::rollback() noexcept {
  if (impl_) impl_->undo.unwind();
}

bool remove_stale_link(std::string_view name) {
  const std::string n(name);
  const std::string what = "delete link " + n;
  RouteSocket sock;
  LinkPtr link(rtnl_link_alloc());
  if (!link) throw TunError(what, ENOMEM);
  rtnl_link_set_name(link.get(), n.c_str());
  NlStatus st = sock.run([&](nl_sock* sk) { return rtnl_link_delete(sk, link.get()); });
  if (st.ok()) {
    tun_log().info("deleted stale link {}", n);
    return true;
  }
  if (st.error_code() == ENODEV || st.error_code() == ENOENT) return false;
  throw TunError(what, st.error_code(), st.reason());
}

std::optional<int> link_index(std::string_view name) {
  const std::string n(name);
  if (n.empty() || n.size() >= IFNAMSIZ) return std::nullopt;
  const unsigned index = if_nametoindex(n.c_str());
  if (index != 0) return static_cast<int>(index);
  if (errno == ENODEV || errno == ENXIO) return std::nullopt;
  throw TunError("look up link " + n, errno);
}

}  // namespace osh::tun
