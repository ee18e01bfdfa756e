package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
)

// collector exports the loop's last published Status as Prometheus
// metrics; it reads a snapshot at scrape time, so the loop's hot paths
// touch no metric.
type collector struct {
	e     *engine
	descs map[string]*prometheus.Desc
}

func newCollector(e *engine) *collector {
	c := &collector{e: e, descs: map[string]*prometheus.Desc{}}
	d := func(name, help string, labels ...string) {
		c.descs[name] = prometheus.NewDesc("syncd_"+name, help, labels, nil)
	}
	d("ready", "1 once the bulk resync is complete and read back from the kernel (the node may take traffic).")
	d("entries", "Entries in the connection table.")
	d("table_events_total", "Table events.", "event")
	d("kernel_frames_total", "Kernel sync datagrams: in = tapped from the kernel master, out = injected into the kernel backup.", "dir")
	d("kernel_entries_total", "Kernel sync entries tapped (in) and injected (out).", "dir")
	d("kernel_errors_total", "Kernel side problems.", "kind")
	d("kernel_inject_queue", "Datagrams waiting for the kernel backup (paced).")
	d("peer_frames_total", "Peer frames received (in) and sent (out).", "dir")
	d("peer_bytes_total", "Peer bytes received (in) and sent (out).", "dir")
	d("peer_frames_rejected_total", "Peer frames rejected, by reason (auth failures, replays, malformed...).", "reason")
	d("peer_send_errors_total", "Peer frames the socket refused to send.")
	d("nacks_total", "NACKs sent and received.", "dir")
	d("resends_total", "UPDATE frames re-sent for NACKs.")
	d("updates_lost_total", "Updates given up on (repaired by bulk dump).")
	d("updates_sent_total", "UPDATE frames sent (resends excluded).")
	d("entries_applied_total", "Peer entries that changed or refreshed the table.")
	d("entries_stale_total", "Peer entries older than the table's copy.")
	d("bulk_entries_sent_total", "Entries sent in bulk dumps.")
	d("bulk_requests_total", "Bulk requests received.")
	d("bulk_resync_seconds", "How long this run's bulk resync took (0 until ready).")
	d("peers", "Peers heard from, by readiness.", "ready")
	d("peer_heard_seconds", "Seconds since each peer was last heard (replication lag upper bound).", "peer")
	d("idle_refreshed_total", "Idle own entries the kernel still had, refreshed on peers.")
	d("held_back_total", "Peer entries not written to the kernel because it lacked their service or real server (written once they appear).")
	d("bound_total", "Held-back peer entries written to the kernel once their service and real server appeared.")
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.e.Snapshot()
	if s == nil {
		return
	}
	g := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v, labels...)
	}
	n := func(name string, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, float64(v), labels...)
	}
	b := 0.0
	if s.Ready {
		b = 1
	}
	g("ready", b)
	g("entries", float64(s.Entries))
	t := s.Table
	n("table_events_total", t.Created, "created")
	n("table_events_total", t.Updated, "updated")
	n("table_events_total", t.Stale, "stale")
	n("table_events_total", t.Expired, "expired")
	n("table_events_total", t.Removed, "removed")
	l := s.Loop
	n("kernel_frames_total", l.KernelFramesIn, "in")
	n("kernel_frames_total", l.KernelFramesOut, "out")
	n("kernel_entries_total", l.KernelEntriesIn, "in")
	n("kernel_entries_total", l.KernelEntriesOut, "out")
	n("kernel_errors_total", l.KernelBadFrames, "bad_frame")
	n("kernel_errors_total", l.KernelBadEntries, "bad_entry")
	n("kernel_errors_total", l.KernelInjectBad, "inject_invalid")
	n("kernel_errors_total", l.KernelInjectDrop, "inject_dropped")
	n("kernel_errors_total", l.KernelInjectErr, "inject_error")
	n("kernel_errors_total", l.KernelReinjected, "readback_missing")
	n("kernel_errors_total", l.KernelRefused, "readback_refused")
	n("kernel_errors_total", l.BindErrors, "services_unreadable")
	g("kernel_inject_queue", float64(s.InjectQueue))
	n("peer_frames_total", l.PeerFramesIn, "in")
	n("peer_frames_total", l.PeerFramesOut, "out")
	n("peer_bytes_total", l.PeerBytesIn, "in")
	n("peer_bytes_total", l.PeerBytesOut, "out")
	n("peer_send_errors_total", l.PeerSendErrors)
	for r, v := range s.Peer.Rejected {
		n("peer_frames_rejected_total", v, r)
	}
	if s.Mode == ModeCompat {
		n("peer_frames_rejected_total", l.CompatBadFrames, "bad kernel datagram")
		n("peer_frames_rejected_total", l.CompatOtherSync, "other syncid")
	}
	p := s.Peer
	n("nacks_total", p.NacksSent, "sent")
	n("nacks_total", p.NacksReceived, "received")
	n("resends_total", p.Resends)
	n("updates_lost_total", p.UpdatesLost)
	n("updates_sent_total", p.UpdatesSent)
	n("entries_applied_total", p.EntriesApplied)
	n("entries_stale_total", p.EntriesStale)
	n("bulk_entries_sent_total", p.BulkEntriesSent)
	n("bulk_requests_total", p.BulkRequests)
	g("bulk_resync_seconds", s.BulkSeconds)
	var ready, notReady int
	for _, pe := range s.Peers {
		if pe.Ready {
			ready++
		} else {
			notReady++
		}
		g("peer_heard_seconds", pe.HeardAgo, pe.Name)
	}
	g("peers", float64(ready), "true")
	g("peers", float64(notReady), "false")
	n("idle_refreshed_total", l.IdleRefreshed)
	n("held_back_total", l.HeldBack)
	n("bound_total", l.Bound)
}
