package syncready

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestSource(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ready.Load() {
			_, _ = w.Write([]byte("ready"))
			return
		}
		http.Error(w, "bulk resync in progress", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	ctx := context.Background()

	tests := []struct {
		name    string
		src     Source
		syncd   bool
		want    bool
		wantErr bool
	}{
		{"syncd not ready", Source{URL: srv.URL + "/ready", Start: time.Now()}, false, false, false},
		{"syncd ready", Source{URL: srv.URL + "/ready", Start: time.Now()}, true, true, false},
		{"syncd unreachable, within timeout", Source{URL: "http://127.0.0.1:1/ready", Timeout: time.Hour, Start: time.Now()}, false, false, false},
		{"syncd not ready, timeout passed", Source{URL: srv.URL + "/ready", Timeout: time.Second, Start: time.Now().Add(-time.Minute)}, false, true, false},
		{"bad URL", Source{URL: "::", Start: time.Now()}, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready.Store(tt.syncd)
			got, err := tt.src.Ready(ctx)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("Ready() = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
