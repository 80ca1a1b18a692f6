package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestServeExposesRegistryAndStops(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)

	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", reg, func(a net.Addr) { addrc <- a }) }()
	addr := <-addrc

	for path, want := range map[string]string{"/metrics": "tether_test_total 3", "/healthz": "ok"} {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %q, want it to contain %q", path, body, want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel = %v, want nil", err)
	}
}

func TestServeReportsListenError(t *testing.T) {
	if err := Serve(context.Background(), "256.0.0.1:1", NewRegistry(), nil); err == nil {
		t.Fatal("Serve on a bad address succeeded")
	}
}
