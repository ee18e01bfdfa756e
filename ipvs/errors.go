package ipvs

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Sentinel errors. Each one is wrapped together with the error it was made
// from (usually a *netlink.OpError around a unix.Errno), so both
// errors.Is(err, ErrDaemonRunning) and errors.Is(err, unix.EEXIST) hold.
var (
	// ErrNoIPVS: the kernel has no "IPVS" generic-netlink family (nor the
	// net.ipv4.vs sysctls), i.e. the ip_vs module is not loaded and could
	// not be loaded on demand.
	ErrNoIPVS = errors.New("the kernel has no IPVS (generic netlink family \"IPVS\" not found): load the ip_vs module: modprobe ip_vs")

	// ErrPermission: the kernel refused the operation (EPERM/EACCES). Every
	// IPVS netlink command, reads included, is GENL_ADMIN_PERM, which the
	// kernel checks against the initial user namespace.
	ErrPermission = errors.New("permission denied: IPVS needs CAP_NET_ADMIN (and CAP_SYS_ADMIN to enter another network namespace): run as root or grant the capabilities")

	// ErrDaemonRunning: NEW_DAEMON for a state (master or backup) that
	// already has a sync thread; the kernel does not reconfigure it.
	ErrDaemonRunning = errors.New("a sync daemon in this state is already running: stop it first (StopDaemon) or keep it if Daemons shows the wanted config")

	// ErrDaemonNotRunning: DEL_DAEMON for a state that has no sync thread.
	ErrDaemonNotRunning = errors.New("no sync daemon in this state is running: nothing to stop")

	// ErrNoInterface: the sync interface does not exist in the handle's
	// network namespace (the kernel looks it up by name there).
	ErrNoInterface = errors.New("the sync interface does not exist in this network namespace: create it first (ip link add NAME type dummy; ip link set NAME up multicast on)")

	// ErrNotMulticast: the sync group is not a multicast address. Both this
	// package (before sending) and the kernel refuse it.
	ErrNotMulticast = errors.New("the sync group is not a multicast address: use one in 224.0.0.0/4 or ff00::/8, or leave it zero for the kernel default 224.0.0.81")
)

// errnoOf returns the errno inside err, if any.
func errnoOf(err error) (unix.Errno, bool) {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno, true
	}
	return 0, false
}

// withSentinel keeps err (and so its errno) reachable next to the sentinel.
func withSentinel(sentinel, err error) error {
	return fmt.Errorf("%w (%w)", sentinel, err)
}

// mapCommon maps the errnos that mean the same thing for every IPVS
// command; the others are returned unchanged.
func mapCommon(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrPermission) || errors.Is(err, ErrNoIPVS) {
		return err
	}
	if errno, ok := errnoOf(err); ok && (errno == unix.EPERM || errno == unix.EACCES) {
		return withSentinel(ErrPermission, err)
	}
	return err
}
