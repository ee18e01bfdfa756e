package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/peer"
	"github.com/peerlvs/peerlvs/syncd/table"
)

// Status is what GET /stats returns.
type Status struct {
	Node        int         `json:"node_id"`
	Name        string      `json:"node_name"`
	Mode        string      `json:"mode"`
	Ready       bool        `json:"ready"`
	Started     time.Time   `json:"started"`
	ReadyAt     time.Time   `json:"ready_at,omitzero"`
	BulkSeconds float64     `json:"bulk_resync_seconds,omitempty"`
	Entries     int         `json:"entries"`
	OwnEntries  int         `json:"own_entries"`
	Table       table.Stats `json:"table"`
	Loop        Counters    `json:"loop"`
	Peer        PeerStats   `json:"peer"`
	Peers       []PeerState `json:"peers"`
	InjectQueue int         `json:"inject_queue"`

	published time.Time
}

// PeerStats are the Node's counters, rejections by reason name.
type PeerStats struct {
	Opened          uint64            `json:"frames_opened"`
	Rejected        map[string]uint64 `json:"frames_rejected"`
	UpdatesSent     uint64            `json:"updates_sent"`
	EntriesSent     uint64            `json:"entries_sent"`
	Resends         uint64            `json:"resends"`
	ResendTooOld    uint64            `json:"resend_too_old"`
	NacksSent       uint64            `json:"nacks_sent"`
	NacksReceived   uint64            `json:"nacks_received"`
	UpdatesLost     uint64            `json:"updates_lost"`
	EntriesApplied  uint64            `json:"entries_applied"`
	EntriesStale    uint64            `json:"entries_stale"`
	EntriesInvalid  uint64            `json:"entries_invalid"`
	BulkFramesSent  uint64            `json:"bulk_frames_sent"`
	BulkEntriesSent uint64            `json:"bulk_entries_sent"`
	BulkRequests    uint64            `json:"bulk_requests"`
	SealErrors      uint64            `json:"seal_errors"`
}

// PeerState is a peer as last heard.
type PeerState struct {
	ID          int     `json:"id"`
	Name        string  `json:"name"`
	Incarnation uint64  `json:"incarnation"`
	HeardAgo    float64 `json:"heard_seconds_ago"`
	Ready       bool    `json:"ready"`
	Entries     uint32  `json:"entries"`
}

// ConnJSON is one line of GET /conns.
type ConnJSON struct {
	Proto       string `json:"proto"`
	Source      string `json:"source"`
	Virtual     string `json:"virtual"`
	Destination string `json:"destination"`
	State       string `json:"state"`
	Expires     uint32 `json:"expires"` // seconds left
	Owner       int    `json:"owner"`
	OwnerName   string `json:"owner_name"`
	Age         uint32 `json:"age"` // seconds since the owner's kernel reported it
	Forward     string `json:"forward"`
	Template    bool   `json:"template,omitempty"`
	Version     uint32 `json:"version"`
}

func (e *engine) publishMaybe(now time.Time) {
	e.snapMu.Lock()
	old := e.snap
	e.snapMu.Unlock()
	if old == nil || now.Sub(old.stamp()) >= 50*time.Millisecond || old.Ready != e.ready.Load() {
		e.publish(now)
	}
}

func (s *Status) stamp() time.Time { return s.published }

func (e *engine) publish(now time.Time) {
	s := &Status{
		Node: e.cfg.NodeID, Name: e.cfg.NodeName, Mode: e.cfg.Peer.Mode,
		Ready: e.ready.Load(), Started: e.started, Loop: e.st, InjectQueue: len(e.inj.queue),
	}
	s.Table = e.tbl.Stats()
	s.Entries = s.Table.Len
	if s.Ready {
		s.ReadyAt = e.readyAt
		s.BulkSeconds = e.readyAt.Sub(e.started).Seconds()
	}
	if e.node != nil {
		ns := e.node.Stats()
		s.Peer = PeerStats{
			Opened: ns.Frames.Opened, Rejected: map[string]uint64{},
			UpdatesSent: ns.UpdatesSent, EntriesSent: ns.EntriesSent, Resends: ns.Resends, ResendTooOld: ns.ResendTooOld,
			NacksSent: ns.NacksSent, NacksReceived: ns.NacksReceived, UpdatesLost: ns.UpdatesLost,
			EntriesApplied: ns.EntriesApplied, EntriesStale: ns.EntriesStale, EntriesInvalid: ns.EntriesInvalid,
			BulkFramesSent: ns.BulkFramesSent, BulkEntriesSent: ns.BulkEntriesSent, BulkRequests: ns.BulkRequests,
			SealErrors: ns.SealErrors,
		}
		for i, n := range ns.Frames.Rejected {
			s.Peer.Rejected[peer.ReasonName(i)] = n
		}
		for _, p := range e.node.Peers() {
			s.Peers = append(s.Peers, PeerState{
				ID: int(p.ID), Name: e.tbl.NodeName(p.ID), Incarnation: p.Incarnation,
				HeardAgo: now.Sub(p.Heard).Seconds(), Ready: p.Ready, Entries: p.Entries,
			})
		}
	}
	s.published = now
	e.snapMu.Lock()
	e.snap = s
	e.snapMu.Unlock()
}

// Snapshot returns the last published status.
func (e *engine) Snapshot() *Status {
	e.snapMu.Lock()
	defer e.snapMu.Unlock()
	return e.snap
}

// conns lists the table.
func conns(t *table.Table, now time.Time) []ConnJSON {
	out := []ConnJSON{}
	ts := table.StampOf(now)
	t.ForEach(0, func(en *table.Entry) bool {
		c := ConnJSON{
			Proto:       protoLower(en.Proto),
			Source:      addrPort(en.CAddr, en.CPort),
			Virtual:     addrPort(en.VAddr, en.VPort),
			Destination: addrPort(en.DAddr, en.DPort),
			Expires:     en.Expires.Sub(ts),
			Owner:       int(en.Owner),
			OwnerName:   t.NodeName(en.Owner),
			Age:         ts.Sub(en.Reported),
			Forward:     wire.FwdMethod(en.Flags),
			Template:    en.Template,
			Version:     en.Version,
		}
		if en.Template {
			c.State = wire.TemplateStateName(en.State)
		} else {
			c.State = wire.StateName(en.Proto, en.State)
		}
		out = append(out, c)
		return true
	})
	return out
}

func protoLower(p uint8) string {
	switch p {
	case wire.ProtoTCP:
		return "TCP"
	case wire.ProtoUDP:
		return "UDP"
	}
	return wire.ProtoName(p)
}

func addrPort(a netip.Addr, port uint16) string {
	if !a.IsValid() {
		return "-"
	}
	return netip.AddrPortFrom(a, port).String()
}

// handler serves the status endpoint.
func (e *engine) handler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if e.ready.Load() {
			fmt.Fprintln(w, "ready")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: bulk resync in progress, or the kernel's table not yet read back")
	})
	// POST /bind writes the peers' entries held back for every service
	// and real server that appeared in the kernel, and answers once they
	// are handed to the kernel: saru asks after declaring its services,
	// before it turns ready (bind.go).
	mux.HandleFunc("POST /bind", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		done := make(chan error, 1)
		var err error
		select {
		case e.bindReq <- done:
			select {
			case err = <-done:
			case <-ctx.Done():
				err = ctx.Err()
			}
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not bound: %v\n", err)
			return
		}
		fmt.Fprintln(w, "bound")
	})
	mux.HandleFunc("GET /conns", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, conns(e.tbl, time.Now()))
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		s := *e.Snapshot()
		s.OwnEntries = 0
		e.tbl.ForEach(table.NodeID(e.cfg.NodeID), func(*table.Entry) bool { s.OwnEntries++; return true })
		writeJSON(w, &s)
	})
	if reg != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	}
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
