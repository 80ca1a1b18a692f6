package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/pkg/security/certs"
	"github.com/tether-edge/tether/pkg/security/token"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeCloud is cloudcore's certificate port: GET /ca.crt and GET /node/{name}, over TLS with a server
// certificate for sans, signed by its own CA.
type fakeCloud struct {
	caDER, caKeyDER []byte
	addr            string // host:port
	nodes           map[string]bool
}

func newFakeCloud(t *testing.T, sans ...string) *fakeCloud {
	t.Helper()
	if len(sans) == 0 {
		sans = []string{"127.0.0.1"}
	}
	ca, caKey, err := certs.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv, srvKey, err := certs.NewServerCert(ca, caKey, sans, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := certs.MarshalKeyDER(caKey)
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeCloud{caDER: ca.Raw, caKeyDER: keyDER, nodes: map[string]bool{"taken": true}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ca.crt", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(c.caDER) })
	mux.HandleFunc("GET /node/{name}", func(w http.ResponseWriter, r *http.Request) {
		if c.nodes[r.PathValue("name")] {
			_, _ = w.Write([]byte("Node founded"))
			return
		}
		http.Error(w, "Node not found", http.StatusNotFound)
	})
	s := httptest.NewUnstartedServer(mux)
	// Reachability checks connect without a handshake; the server's complaints about that are noise here.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srv.Raw}, PrivateKey: srvKey}}}
	s.StartTLS()
	t.Cleanup(s.Close)
	c.addr = s.Listener.Addr().String()
	return c
}

// token issues a join token for this cloud expiring ttl after testNow.
func (c *fakeCloud) token(t *testing.T, ttl time.Duration) string {
	t.Helper()
	tok, err := token.Create(c.caDER, c.caKeyDER, time.Hour, testNow.Add(ttl-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rejoinToken issues a re-join token for node, valid for an hour after testNow.
func (c *fakeCloud) rejoinToken(t *testing.T, node string) string {
	t.Helper()
	tok, err := token.CreateRejoin(c.caDER, c.caKeyDER, node, time.Hour, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// unixSocket listens on a socket in a short directory (sun_path is 108 bytes; t.TempDir() can be longer).
func unixSocket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "keadm-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	p := filepath.Join(dir, "containerd.sock")
	ln, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return p
}

func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("error %v, want one containing %q", err, want)
	case err != nil && strings.Contains(err.Error(), "\n"):
		t.Errorf("error spans several lines: %q", err)
	}
}

func TestCheckToken(t *testing.T) {
	c := newFakeCloud(t)
	valid := c.token(t, time.Hour)
	tests := []struct {
		name, tok, want string
		is              error
	}{
		{"valid", valid, "", nil},
		{"valid with whitespace from copy and paste", " " + valid + "\n", "", nil},
		{"one part", "abc", "--token: malformed token: want 4 dot-separated parts", token.ErrMalformed},
		{"three parts", valid[strings.Index(valid, ".")+1:], "got 3; copy the whole token again from \"keadm gettoken\"", token.ErrMalformed},
		{"bad hash", "xyz." + valid[strings.Index(valid, ".")+1:], "CA hash \"xyz\" is not 64 hex characters", token.ErrMalformed},
		{"JWT garbage", strings.Repeat("a", 64) + ".a.b.c", "--token: malformed token", token.ErrMalformed},
		{"expired", c.token(t, -3*time.Hour), "--token: token expired at 2026-03-01T09:00:00Z (3h ago): get a new one with \"keadm gettoken\"", token.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkToken(tt.tok, testNow)
			wantErr(t, err, tt.want)
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not wrap %v", err, tt.is)
			}
		})
	}
}

func TestCheckCloud(t *testing.T) {
	ctx := context.Background()
	c := newFakeCloud(t)
	other := newFakeCloud(t)
	wrongSAN := newFakeCloud(t, "10.9.8.7", "cloud.example.com")

	t.Run("reachable", func(t *testing.T) {
		wantErr(t, checkReachable(ctx, c.addr, "certificate", "--certport", time.Second, true), "")
	})
	t.Run("unreachable", func(t *testing.T) {
		addr := closedAddr(t)
		_, port, _ := net.SplitHostPort(addr)
		wantErr(t, checkReachable(ctx, addr, "websocket", "--cloudcore-ipport", time.Second, false),
			"cannot reach cloudcore's websocket port "+addr+": connect: connection refused; check that cloudcore runs, that --cloudcore-ipport is right, and that no firewall blocks TCP "+port)
	})
	t.Run("CA hash matches", func(t *testing.T) {
		ca, err := fetchCA(ctx, c.addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, checkCAHash(c.token(t, time.Hour), ca, c.addr), "")
		wantErr(t, checkServerCert(ctx, c.addr, ca, time.Second), "")
	})
	t.Run("token of another cloud", func(t *testing.T) {
		ca, err := fetchCA(ctx, c.addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		err = checkCAHash(other.token(t, time.Hour), ca, c.addr)
		wantErr(t, err, "--token was not issued by the cloudcore at "+c.addr+" (CA certificate does not match token: token expects CA sha256 ")
		wantErr(t, err, "take the token from this cloudcore (keadm gettoken)")
		if !errors.Is(err, token.ErrCAHashMismatch) {
			t.Errorf("error %v does not wrap ErrCAHashMismatch", err)
		}
	})
	t.Run("not a cloudcore", func(t *testing.T) {
		plain := httptest.NewTLSServer(http.NotFoundHandler())
		defer plain.Close()
		_, err := fetchCA(ctx, plain.Listener.Addr().String(), time.Second)
		wantErr(t, err, "/ca.crt: status 404")
		wantErr(t, err, "cloudcore's https port (--certport)?")
	})
	t.Run("certificate without this address", func(t *testing.T) {
		ca, err := fetchCA(ctx, wrongSAN.addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, checkServerCert(ctx, wrongSAN.addr, ca, time.Second),
			"cloudcore's certificate is not valid for 127.0.0.1 (it covers 10.9.8.7, cloud.example.com): join with one of those addresses, or add 127.0.0.1 to cloudHub.advertiseAddress")
	})
	t.Run("node name free", func(t *testing.T) {
		wantErr(t, checkNodeName(ctx, c.addr, "edge1", time.Second), "")
	})
	t.Run("node name taken", func(t *testing.T) {
		wantErr(t, checkNodeName(ctx, c.addr, "taken", time.Second),
			`node "taken" already exists in the cluster: choose another --edgenode-name, or, to replace that edge node, join with a token from "keadm gettoken --rejoin taken" on the cloud`)
	})
	t.Run("invalid node name", func(t *testing.T) {
		wantErr(t, checkNodeNameValid("Edge_1"), `--edgenode-name "Edge_1" is not a valid node name`)
	})
}

func TestCheckRuntimeSocket(t *testing.T) {
	sock := unixSocket(t)
	file := filepath.Join(t.TempDir(), "file")
	writeTestFile(t, file, "x")
	tests := []struct{ name, endpoint, want string }{
		{"socket", "unix://" + sock, ""},
		{"bare path", sock, ""},
		{"missing", "unix:///nonexistent/containerd.sock", "container runtime socket /nonexistent/containerd.sock does not exist: install and start containerd, or point --remote-runtime-endpoint at its socket"},
		{"not a socket", "unix://" + file, "is not a socket"},
		{"tcp", "tcp://127.0.0.1:1234", "want unix:///absolute/path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantErr(t, checkRuntimeSocket(tt.endpoint), tt.want) })
	}
}

func TestCheckBrokerPortFree(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	for _, tc := range []struct {
		broker, want string
	}{
		{"tcp://" + freeAddr, ""},
		{"tcp://" + held.Addr().String(), "systemctl stop mosquitto"},
		{"not a url", "not a URL"},
	} {
		err := checkBrokerPortFree(tc.broker)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("checkBrokerPortFree(%q) = %v, want %q", tc.broker, err, tc.want)
		}
	}
}

func TestCheckNotJoined(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edgecore.yaml")
	pid := filepath.Join(dir, "edgecore.pid")
	wantErr(t, checkNotJoined(cfg, pid), "")
	writeTestFile(t, cfg, "x")
	wantErr(t, checkNotJoined(cfg, pid),
		"this host already joined ("+cfg+" exists): run \"keadm reset edge\" first, or pass --force to overwrite it")
	// A PID file naming a process that is not edgecore is stale, not a running node.
	writeTestFile(t, pid, "1\n")
	_ = os.Remove(cfg)
	wantErr(t, checkNotJoined(cfg, pid), "")
	p := startFakeEdgecore(t)
	writeTestFile(t, pid, p+"\n")
	wantErr(t, checkNotJoined(cfg, pid), "edgecore is already running (pid "+p)
}

func TestCgroupDriver(t *testing.T) {
	dir := t.TempDir()
	systemdConf := filepath.Join(dir, "systemd.toml")
	writeTestFile(t, systemdConf, "[plugins]\n  # SystemdCgroup = false\n            SystemdCgroup = true\n")
	cgroupfsConf := filepath.Join(dir, "cgroupfs.toml")
	writeTestFile(t, cgroupfsConf, "            SystemdCgroup = false\n")
	silent := filepath.Join(dir, "silent.toml")
	writeTestFile(t, silent, "version = 2\n")
	missing := filepath.Join(dir, "missing.toml")

	// containerd's config decides whenever it says; the host decides only when it does not.
	for _, tt := range []struct {
		files              []string
		systemdOwnsCgroups bool
		want               string
	}{
		{[]string{missing, systemdConf}, false, "systemd"},
		{[]string{cgroupfsConf, systemdConf}, false, "cgroupfs"},
		{[]string{cgroupfsConf}, true, "cgroupfs"},
		{[]string{silent, missing}, false, "cgroupfs"},
		{[]string{silent}, true, "systemd"},
	} {
		if got := detectCgroupDriver(tt.files, tt.systemdOwnsCgroups); got != tt.want {
			t.Errorf("detectCgroupDriver(%v, systemd owns cgroups %v) = %s, want %s", tt.files, tt.systemdOwnsCgroups, got, tt.want)
		}
	}

	wantErr(t, checkCgroupDriver("systemd", []string{systemdConf}), "")
	wantErr(t, checkCgroupDriver("cgroupfs", []string{missing}), "")
	wantErr(t, checkCgroupDriver("cgroupfs", []string{systemdConf}),
		"--cgroupdriver cgroupfs, but containerd ("+systemdConf+") sets SystemdCgroup = true: pass --cgroupdriver systemd (or leave it out), or change containerd's config and restart it")
	wantErr(t, checkCgroupDriver("systemd", []string{cgroupfsConf}), "sets SystemdCgroup = false: pass --cgroupdriver cgroupfs")

	if got := containerdConfigsFor("unix:///tmp/x/containerd.sock"); got[0] != "/tmp/x/config.toml" {
		t.Errorf("containerd config candidates %v, want /tmp/x/config.toml first", got)
	}
}

// TestRunPreflight checks the whole set: each problem is one line on stderr, and checks whose inputs are
// broken are skipped rather than reported twice.
func TestRunPreflight(t *testing.T) {
	c := newFakeCloud(t)
	sock := unixSocket(t)
	good := func() *preflightInput {
		dir := t.TempDir()
		return &preflightInput{
			configPath: filepath.Join(dir, "edgecore.yaml"), pidPath: filepath.Join(dir, "edgecore.pid"),
			token: c.token(t, time.Hour), now: testNow, cloudAddr: c.addr, certAddr: c.addr, nodeName: "edge1",
			runtimeEndpoint: "unix://" + sock, cgroupDriver: "cgroupfs", timeout: time.Second,
		}
	}
	tests := []struct {
		name   string
		mutate func(*preflightInput)
		want   []string
	}{
		{"all pass", func(*preflightInput) {}, nil},
		{"name taken", func(in *preflightInput) { in.nodeName = "taken" }, []string{`node "taken" already exists`}},
		{"name taken, forced", func(in *preflightInput) { in.nodeName = "taken"; in.force = true }, nil},
		{"name taken, re-join token for it", func(in *preflightInput) { in.nodeName = "taken"; in.token = c.rejoinToken(t, "taken") }, nil},
		{"re-join token for another node", func(in *preflightInput) { in.token = c.rejoinToken(t, "taken") },
			[]string{`--token is a re-join token for node "taken", not for --edgenode-name "edge1"`}},
		{"already joined", func(in *preflightInput) { writeTestFile(t, in.configPath, "x") }, []string{"this host already joined"}},
		{"already joined, forced", func(in *preflightInput) { writeTestFile(t, in.configPath, "x"); in.force = true }, nil},
		{"expired token", func(in *preflightInput) { in.token = c.token(t, -time.Minute) }, []string{"--token: token expired at"}},
		{"wrong CA", func(in *preflightInput) { in.token = newFakeCloud(t).token(t, time.Hour) }, []string{"--token was not issued by the cloudcore"}},
		{"runtime missing", func(in *preflightInput) { in.runtimeEndpoint = "unix:///nonexistent.sock" }, []string{"container runtime socket /nonexistent.sock does not exist"}},
		{"cloud down", func(in *preflightInput) { in.cloudAddr, in.certAddr = closedAddr(t), closedAddr(t) },
			[]string{"cannot reach cloudcore's websocket port", "cannot reach cloudcore's certificate port"}},
		{"bad token and taken name", func(in *preflightInput) { in.token = "x"; in.nodeName = "taken" },
			[]string{"--token: malformed token", `node "taken" already exists`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := good()
			tt.mutate(in)
			var out, errw bytes.Buffer
			err := runPreflight(context.Background(), &out, &errw, in)
			lines := strings.Split(strings.TrimSpace(errw.String()), "\n")
			if len(tt.want) == 0 {
				if err != nil || errw.Len() > 0 || !strings.Contains(out.String(), "checks passed") {
					t.Fatalf("err %v, stdout %q, stderr %q; want all checks passed", err, out.String(), errw.String())
				}
				return
			}
			if err == nil || len(lines) != len(tt.want) {
				t.Fatalf("err %v, stderr %q; want %d failure lines", err, errw.String(), len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], "[preflight] ") || !strings.Contains(lines[i], w) {
					t.Errorf("line %d %q, want it to contain %q", i, lines[i], w)
				}
			}
			wantErr(t, err, "failed (see above); nothing was changed")
		})
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
