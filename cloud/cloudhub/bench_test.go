package cloudhub

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/security/certs"
)

// Environment of the edge helper process.
const (
	helperEnv      = "TETHER_CLOUDHUB_EDGE_HELPER"
	helperURL      = "TETHER_CLOUDHUB_HELPER_URL"
	helperNodes    = "TETHER_CLOUDHUB_HELPER_NODES"
	helperCertDir  = "TETHER_CLOUDHUB_HELPER_CERTS"
	benchNodesEnv  = "TETHER_BENCH_NODES"
	benchNoSyncEnv = "TETHER_BENCH_NO_OBJECTSYNC"
	benchHeapEnv   = "TETHER_BENCH_HEAP_PROFILE"
	defaultBenchN  = 50
	helperDialers  = 16
	helperReadyMsg = "ready"
)

// BenchmarkConnections connects N simulated edge nodes (TETHER_BENCH_NODES,
// default 50) over mutual TLS from a child process, so that the heap
// measured here is the cloud side's alone, and reports:
//
//   - heap-B/node and stack-B/node: live heap and goroutine stacks per
//     connected node (runtime.MemStats after GC, before vs after connecting);
//
//   - p50/p99-ms: one downstream pod message to a node until its ACK has
//     been recorded in the ObjectSync (fake client), one at a time (b.N);
//
//   - burst-p50/p99-ms: the same with one message to every node at once.
//
// TETHER_BENCH_NO_OBJECTSYNC=1 leaves out the ObjectSync writes;
// TETHER_BENCH_HEAP_PROFILE=file writes a heap profile with all nodes
// connected (use with -memprofilerate 512).
//
//	TETHER_BENCH_NODES=1000 go test -run '^$' -bench Connections -benchtime 2000x ./cloud/cloudhub/
func BenchmarkConnections(b *testing.B) {
	nodes := defaultBenchN
	if v := os.Getenv(benchNodesEnv); v != "" {
		var err error
		if nodes, err = strconv.Atoi(v); err != nil || nodes < 1 {
			b.Fatalf("%s=%q: want a positive integer", benchNodesEnv, v)
		}
	}
	e := newEnv(b, envConfig{
		controllers: []string{},
		ackBuffer:   2 * nodes,
		opts: func(o *Options) {
			o.Config.NodeLimit = int32(nodes)
			o.KeepaliveTimeout = time.Hour
			o.AckTimeout = time.Minute
			// The fake client dominates the profile; "off" isolates the hub.
			if os.Getenv(benchNoSyncEnv) != "" {
				o.Client = nil
			}
		},
	})
	dir := b.TempDir()
	caKey, err := certs.MarshalKeyDER(e.pki.caKey)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.der"), e.pki.ca.Raw, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), caKey, 0o600); err != nil {
		b.Fatal(err)
	}

	before := liveMemory()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperURL+"="+e.url,
		helperNodes+"="+strconv.Itoa(nodes), helperCertDir+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = stdin.Close() // the helper exits when its stdin closes
		if err := cmd.Wait(); err != nil {
			b.Errorf("edge helper: %v", err)
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != helperReadyMsg+"\n" {
		b.Fatalf("edge helper: %q, %v", line, err)
	}
	e.eventually("all nodes connected", func() bool { return e.hub.connectedNodes() == nodes })
	connectTime := time.Since(start)
	after := liveMemory()
	if path := os.Getenv(benchHeapEnv); path != "" {
		writeHeapProfile(b, path)
	}
	heapPerNode := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(nodes)
	stackPerNode := float64(int64(after.StackInuse)-int64(before.StackInuse)) / float64(nodes)

	send := func(i int) string {
		node := fmt.Sprintf("bench-%d", i%nodes)
		m := podMsg(node, fmt.Sprintf("p%d", i), fmt.Sprintf("uid-%d", i), "1", model.InsertOperation)
		e.toCloudhub(m)
		return m.Header.ID
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		id := send(i)
		e.expectAck(id)
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()

	// Burst: one message to every node, all at once.
	t0 := time.Now()
	pending := map[string]bool{}
	for i := range nodes {
		pending[send(b.N+i)] = true
	}
	var burst []time.Duration
	for len(pending) > 0 {
		select {
		case id := <-e.acks:
			if pending[id] {
				delete(pending, id)
				burst = append(burst, time.Since(t0))
			}
		case <-time.After(waitTimeout):
			b.Fatalf("%d burst messages not ACKed", len(pending))
		}
	}
	b.ReportMetric(heapPerNode, "heap-B/node")
	b.ReportMetric(stackPerNode, "stack-B/node")
	b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 99)), "p99-ms")
	b.ReportMetric(ms(percentile(burst, 50)), "burst-p50-ms")
	b.ReportMetric(ms(percentile(burst, 99)), "burst-p99-ms")
	b.Logf("%d nodes connected in %v; heap %.0f B/node, stacks %.0f B/node, goroutines %d",
		nodes, connectTime.Round(time.Millisecond), heapPerNode, stackPerNode, runtime.NumGoroutine())
}

func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

func liveMemory() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// runEdgeHelper is the child process of BenchmarkConnections: it connects
// the nodes, ACKs every downstream message like edge MetaManager, and exits
// when stdin closes.
func runEdgeHelper() int {
	if err := edgeHelper(); err != nil {
		fmt.Fprintln(os.Stderr, "edge helper:", err)
		return 1
	}
	return 0
}

func edgeHelper() error {
	nodes, err := strconv.Atoi(os.Getenv(helperNodes))
	if err != nil {
		return fmt.Errorf("%s: %w", helperNodes, err)
	}
	dir := os.Getenv(helperCertDir)
	caDER, err := os.ReadFile(filepath.Join(dir, "ca.der"))
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("parse CA: %w", err)
	}
	keyDER, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return err
	}
	caKey, err := certs.ParseKeyDER(keyDER)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	conns := make([]*websocket.Conn, nodes)
	var readers sync.WaitGroup
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
		readers.Wait()
	}()
	errs := make(chan error, nodes)
	sem := make(chan struct{}, helperDialers)
	var dialers sync.WaitGroup
	for i := range nodes {
		sem <- struct{}{}
		dialers.Go(func() {
			defer func() { <-sem }()
			c, err := dialNode(fmt.Sprintf("bench-%d", i), ca, caKey, pool)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
			readers.Go(func() { ackLoop(c) })
		})
	}
	dialers.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Println(helperReadyMsg)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

func dialNode(node string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, pool *x509.CertPool) (*websocket.Conn, error) {
	key, csr, err := certs.NewNodeCSR(node)
	if err != nil {
		return nil, err
	}
	der, err := certs.SignNodeCSR(ca, caKey, csr, node, nil, 0, time.Now())
	if err != nil {
		return nil, err
	}
	d := websocket.Dialer{
		TLSClientConfig:  &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		HandshakeTimeout: time.Minute,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
	}
	c, resp, err := d.Dial(os.Getenv(helperURL), http.Header{HeaderNodeID: {node}})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("dial as %s: %w", node, err)
	}
	return c, nil
}

func ackLoop(c *websocket.Conn) {
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			return
		}
		var m model.Message
		if json.Unmarshal(data, &m) != nil || m.Router.Operation == model.ResponseOperation {
			continue
		}
		if c.WriteJSON(model.NewRespByMessage(&m, "OK")) != nil {
			return
		}
	}
}
