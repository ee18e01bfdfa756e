// Package ipvs talks to the Linux kernel's IPVS control plane: virtual
// services and their real servers, the kernel's own connection sync threads
// (master and backup), IPVS's version information and the sync sysctls under
// net.ipv4.vs.
//
// PeerLVS needs all of this in one place because the kernel offers no
// netlink command that lists or inserts IPVS connections: syncd has to start
// and stop the kernel's sync threads itself (on a host-local link, see
// ipvs/synclink) and relies on services and destinations being configured the
// same way on every director. Services and destinations go through
// github.com/moby/ipvs; sync daemons and version information are spoken
// directly over the "IPVS" generic-netlink family, because moby/ipvs does not
// cover them.
//
// A Handle is bound to one network namespace, chosen when it is opened; every
// netlink socket and every sysctl it touches belongs to that namespace, so a
// lab or a test can drive several directors from one process.
//
// Subpackages hold the parts that are not control plane:
//
//   - ipvs/wire: the sync wire format (v0 and v1) the kernel threads exchange;
//   - ipvs/procconn: the /proc/net/ip_vs_conn snapshot parser;
//   - ipvs/synclink: the host-local link between syncd and the kernel threads;
//   - ipvs/reconcile: the changes that bring the kernel's services and real
//     servers to a declared set (pure; saru applies them through a Handle).
//
// This package is a library for daemons, not a daemon: it starts no
// goroutines that outlive a call, holds no global state, and logs nothing.
// Every error it returns names the operation and the object (service, daemon
// state, sysctl) it was about, and wraps both a sentinel of this package
// where one applies (ErrNoIPVS, ErrPermission, ErrDaemonRunning, ...) and the
// kernel's errno, so callers can test either with errors.Is.
//
// One side effect is not ours: the first Handle a process opens makes
// github.com/moby/ipvs run "modprobe -va ip_vs" once and, if that fails,
// write a warning through logrus. Open only gets that far after it has found
// the IPVS family itself, so the probe is a no-op in practice.
package ipvs
