package traffic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"
)

// listenUDPEcho opens the echo server's UDP socket with packet info on, so
// that each datagram tells which local address it was sent to.
func listenUDPEcho(network string, ap netip.AddrPort) (*net.UDPConn, error) {
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if ap.Addr().Is4() {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO, 1)
		} else {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO, 1)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("enable packet info: %w", err)
	}
	return c, nil
}

// udpDst is where a datagram was sent to: the address to answer from.
type udpDst struct {
	addr    netip.Addr
	ifindex uint32
}

// readUDPWithDst reads one datagram and the local address it was sent to
// (invalid if the kernel did not say).
func readUDPWithDst(c *net.UDPConn, buf, oob []byte) (int, udpDst, netip.AddrPort, error) {
	n, oobn, _, src, err := c.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		return 0, udpDst{}, src, err
	}
	var dst udpDst
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		// Without packet info the reply still goes out, just from the
		// address routing picks.
		return n, dst, src, nil
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
			dst.addr = netip.AddrFrom4([4]byte(m.Data[8:12]))
		case m.Header.Level == syscall.IPPROTO_IPV6 && m.Header.Type == syscall.IPV6_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet6Pktinfo:
			// struct in6_pktinfo { in6_addr addr; unsigned int ifindex; }
			dst.addr = netip.AddrFrom16([16]byte(m.Data[0:16]))
			dst.ifindex = binary.NativeEndian.Uint32(m.Data[16:20])
		}
	}
	return n, dst, src, nil
}

// writeUDPFromDst sends b to src with dst as its source address.
func writeUDPFromDst(c *net.UDPConn, b []byte, dst udpDst, src netip.AddrPort) error {
	if !dst.addr.IsValid() || dst.addr.IsMulticast() {
		_, err := c.WriteToUDPAddrPort(b, src)
		return err
	}
	var oob []byte
	if dst.addr.Is4() {
		oob = make([]byte, syscall.CmsgSpace(syscall.SizeofInet4Pktinfo))
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = syscall.IPPROTO_IP, syscall.IP_PKTINFO
		h.SetLen(syscall.CmsgLen(syscall.SizeofInet4Pktinfo))
		pi := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&oob[syscall.CmsgLen(0)]))
		pi.Spec_dst = dst.addr.As4()
	} else {
		oob = make([]byte, syscall.CmsgSpace(syscall.SizeofInet6Pktinfo))
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = syscall.IPPROTO_IPV6, syscall.IPV6_PKTINFO
		h.SetLen(syscall.CmsgLen(syscall.SizeofInet6Pktinfo))
		pi := (*syscall.Inet6Pktinfo)(unsafe.Pointer(&oob[syscall.CmsgLen(0)]))
		pi.Addr = dst.addr.As16()
		if dst.addr.IsLinkLocalUnicast() {
			pi.Ifindex = dst.ifindex
		}
	}
	_, _, err := c.WriteMsgUDPAddrPort(b, oob, src)
	if errors.Is(err, syscall.EINVAL) {
		// A destination that cannot be a source (a broadcast address):
		// let routing choose.
		_, err = c.WriteToUDPAddrPort(b, src)
	}
	return err
}

// OpenCommandFIFO opens (creating it if needed) a named pipe from which a
// holder reads commands, for scenarios that start it without a stdin pipe:
// `echo report > PATH`.
func OpenCommandFIFO(path string) (*os.File, error) {
	if err := syscall.Mkfifo(path, 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create FIFO %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&fs.ModeNamedPipe == 0 {
		return nil, fmt.Errorf("%s exists and is not a FIFO", path)
	}
	// Read-write, so that we hold a writer ourselves: the open does not
	// wait for the first writer, and writers that come and go never make
	// the reader see end-of-file.
	return os.OpenFile(path, os.O_RDWR, 0)
}
