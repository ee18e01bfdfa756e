package main

import (
	"context"
	"fmt"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/saru/controller"
	"github.com/prometheus/client_golang/prometheus"
)

// filterView reads what this director's kernel enforces and counts.
func filterView(ctx context.Context, f *filter.Filter) (*controller.FilterView, error) {
	live, err := f.Live(ctx)
	if err != nil {
		return nil, err
	}
	cnt, err := f.Counters(ctx)
	if err != nil {
		return nil, err
	}
	per, err := f.BucketCounters(ctx)
	if err != nil {
		return nil, err
	}
	return &controller.FilterView{Live: live, Rules: cnt.ByName(), OwnedBuckets: per}, nil
}

// filterCollector reads the rule counters from the kernel on each scrape,
// so the metrics are never staler than the scrape itself.
type filterCollector struct {
	f                    *filter.Filter
	packets, bytes, live *prometheus.Desc
}

func newFilterCollector(f *filter.Filter) *filterCollector {
	return &filterCollector{f: f,
		packets: prometheus.NewDesc("saru_filter_packets_total", "Packets counted by each nftables rule counter of the peerlvs table.", []string{"counter"}, nil),
		bytes:   prometheus.NewDesc("saru_filter_bytes_total", "Bytes counted by each nftables rule counter of the peerlvs table.", []string{"counter"}, nil),
		live:    prometheus.NewDesc("saru_filter_live", "1 while this saru holds the liveness table (the rules accept owned flows), 0 otherwise.", nil, nil),
	}
}

func (c *filterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
	ch <- c.live
}

func (c *filterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	live, err := c.f.Live(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.live, fmt.Errorf("read liveness table: %w", err))
		return
	}
	v := 0.0
	if live {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, v)
	cnt, err := c.f.Counters(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.packets, fmt.Errorf("read rule counters: %w", err))
		return
	}
	for name, n := range cnt.ByName() {
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(n.Packets), name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(n.Bytes), name)
	}
}
