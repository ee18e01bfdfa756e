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
	var binds atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/bind":
			if r.Method != http.MethodPost || !ready.Load() {
				t.Errorf("%s /bind while syncd ready is %v", r.Method, ready.Load())
			}
			binds.Add(1)
			_, _ = w.Write([]byte("bound"))
			return
		case "/bind-fails":
			http.Error(w, "not bound: cannot read the services", http.StatusServiceUnavailable)
			return
		case "/old":
			http.NotFound(w, r)
			return
		}
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
		{"syncd not ready, not asked to bind", Source{URL: srv.URL + "/ready", BindURL: srv.URL + "/bind", Start: time.Now()}, false, false, false},
		{"syncd ready and bound", Source{URL: srv.URL + "/ready", BindURL: srv.URL + "/bind", Start: time.Now()}, true, true, false},
		{"syncd ready, binding failed", Source{URL: srv.URL + "/ready", BindURL: srv.URL + "/bind-fails", Start: time.Now()}, true, false, false},
		{"syncd too old to bind", Source{URL: srv.URL + "/ready", BindURL: srv.URL + "/old", Start: time.Now()}, true, true, false},
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
	if n := binds.Load(); n != 1 {
		t.Errorf("POST /bind %d times, want once (by the one ready source that binds)", n)
	}
}
