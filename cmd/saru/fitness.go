package main

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/peerlvs/peerlvs/saru/fitness"
	"github.com/peerlvs/peerlvs/saru/health"
	"github.com/peerlvs/peerlvs/saru/member"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// newFitness wires the fitness tracker to the member's unfit mark; nil
// when nothing is tracked.
func newFitness(cfg config, node *member.Node, reg prometheus.Registerer, log *zap.Logger) *fitness.Tracker {
	if cfg.Fitness.Empty() {
		return nil
	}
	fit := prometheus.NewGauge(prometheus.GaugeOpts{Name: "saru_fitness_fit",
		Help: "1 while this director passes its fitness checks (it may own buckets), 0 while unfit."})
	changes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "saru_fitness_changes_total",
		Help: "Changes of this director's fitness, by the new state."}, []string{"fit"})
	reg.MustRegister(fit, changes)
	t := fitness.NewTracker(cfg.Fitness, fitness.NetlinkLinks{}, health.Probe)
	// OnChange also reports a link going down or up while unfit; only a
	// change of fitness itself counts and warns.
	known, wasFit := false, false
	t.OnChange = func(v fitness.Verdict) {
		flipped := !known || wasFit != v.Fit
		known, wasFit = true, v.Fit
		if v.Fit {
			fit.Set(1)
			changes.WithLabelValues("true").Inc()
			log.Info("fitness: fit; this director may own buckets again")
			node.SetUnfit(member.Unfit{})
			return
		}
		fit.Set(0)
		if flipped {
			changes.WithLabelValues("false").Inc()
			log.Warn("fitness: unfit; this director hands its buckets to the others and keeps gossiping and syncing",
				zap.String("reason", v.Reason), zap.Bool("link_down", v.LinkDown))
		} else {
			log.Info("fitness: still unfit; a tracked link changed", zap.String("reason", v.Reason), zap.Bool("link_down", v.LinkDown))
		}
		node.SetUnfit(member.Unfit{Reason: v.Reason, LinkDown: v.LinkDown})
	}
	return t
}

// fitnessHandler serves GET /fitness: the verdict and every check.
func fitnessHandler(mux *http.ServeMux, t *fitness.Tracker) {
	mux.HandleFunc("GET /fitness", func(w http.ResponseWriter, _ *http.Request) {
		st := fitness.Status{Verdict: fitness.Verdict{Fit: true}}
		if t != nil {
			st = t.Status()
		}
		_ = writeJSON(w, st)
	})
}

// printFitness writes the fitness part of `saru status`.
func printFitness(w io.Writer, st fitness.Status) {
	if len(st.Checks) == 0 {
		return
	}
	if st.Fit {
		fmt.Fprintf(w, "fitness: fit since %s\n", st.Since.Format(time.RFC3339))
	} else {
		fmt.Fprintf(w, "fitness: UNFIT since %s: %s\n", st.Since.Format(time.RFC3339), st.Reason)
	}
	for _, c := range st.Checks {
		state := "ok"
		if !c.OK {
			state = "FAILED"
		}
		note := ""
		if c.Why != "" {
			note = "  " + c.Why
		}
		fmt.Fprintf(w, "  %-28s %s%s\n", c.Name, state, note)
	}
}
