package services

import (
	"fmt"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/ipvs"
)

// PersistenceKept says why a persistent service cannot keep its promise in
// a fleet that splits flows by sense, if it cannot. A persistence template
// lives in the kernel of the director that scheduled the client's first
// connection and reaches the others only through sync. Only when every
// connection of one template (one client address) falls in one bucket does
// a single director schedule them all; otherwise two directors each pick a
// real server for the same client within the sync delay, and the client is
// split.
func PersistenceKept(v ipvs.Service, sense filter.Sense) error {
	if v.Timeout == 0 {
		return nil
	}
	if sense != filter.SenseAddr {
		return fmt.Errorf("persistence needs sense: addr; with sense: %s one client's connections fall in different buckets, so two directors each choose a real server for it before the other's persistence template arrives", sense)
	}
	full := 32
	if v.Address.Is6() {
		full = 128
	}
	if p := v.PersistPrefix(); p != full {
		return fmt.Errorf("persistence_netmask /%d cannot be kept across directors: sense addr hashes the whole client address, so clients of one /%d fall on different directors, each choosing its own real server; drop persistence_netmask (one client per template)", p, p)
	}
	return nil
}
