//go:build !linux

package traffic

import (
	"errors"
	"net"
	"net/netip"
	"os"
)

// The lab runs on Linux; elsewhere the package builds, and UDP replies come
// from whatever address routing picks.

func listenUDPEcho(network string, ap netip.AddrPort) (*net.UDPConn, error) {
	return net.ListenUDP(network, net.UDPAddrFromAddrPort(ap))
}

type udpDst struct{}

func readUDPWithDst(c *net.UDPConn, buf, _ []byte) (int, udpDst, netip.AddrPort, error) {
	n, src, err := c.ReadFromUDPAddrPort(buf)
	return n, udpDst{}, src, err
}

func writeUDPFromDst(c *net.UDPConn, b []byte, _ udpDst, src netip.AddrPort) error {
	_, err := c.WriteToUDPAddrPort(b, src)
	return err
}

// OpenCommandFIFO is supported on Linux only.
func OpenCommandFIFO(path string) (*os.File, error) {
	return nil, errors.New("command FIFOs are supported on Linux only")
}
