package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"

	"github.com/tether-edge/tether/keadm/app/daemon"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/security/token"
)

// cgroupV2Marker exists only where the unified (v2) hierarchy is mounted on its own.
const cgroupV2Marker = "/sys/fs/cgroup/cgroup.controllers"

// containerdConfs is where a system containerd keeps its config.
var containerdConfs = []string{"/etc/containerd/config.toml"}

// preflightInput is everything the checks look at; it is filled from the flags and the rendered config, so
// the checks see exactly what edgecore will be started with.
type preflightInput struct {
	configPath, pidPath string
	force               bool
	token               string
	now                 time.Time
	cloudAddr, certAddr string
	nodeName            string
	runtimeEndpoint     string
	cgroupDriver        string
	// cgroupExplicit is set when --cgroupdriver was given; a detected driver agrees with containerd by
	// construction.
	cgroupExplicit    bool
	containerdConfigs []string
	// embeddedBroker is the address edgecore's own MQTT broker will listen on, "" when it runs none.
	embeddedBroker string
	timeout        time.Duration
}

// runPreflight runs every check whose prerequisites passed and prints one line per failure on errw, so that a
// user fixes everything in one round. Nothing on the host changes before it returns nil.
func runPreflight(ctx context.Context, out, errw io.Writer, in *preflightInput) error {
	var failed []error
	passed := 0
	run := func(err error) bool {
		if err != nil {
			failed = append(failed, err)
			fmt.Fprintf(errw, "[preflight] %s\n", err)
			return false
		}
		passed++
		return true
	}
	if !in.force {
		run(checkNotJoined(in.configPath, in.pidPath))
	}
	tokenOK := run(checkToken(in.token, in.now))
	run(checkRuntimeSocket(in.runtimeEndpoint))
	if in.cgroupExplicit {
		run(checkCgroupDriver(in.cgroupDriver, in.containerdConfigs))
	}
	if in.embeddedBroker != "" {
		run(checkBrokerPortFree(in.embeddedBroker))
	}
	run(checkReachable(ctx, in.cloudAddr, "websocket", "--cloudcore-ipport", in.timeout, false))
	certOK := run(checkReachable(ctx, in.certAddr, "certificate", "--certport", in.timeout, true))
	var ca []byte
	if certOK && tokenOK {
		var err error
		if ca, err = fetchCA(ctx, in.certAddr, in.timeout); run(err) && run(checkCAHash(in.token, ca, in.certAddr)) {
			run(checkServerCert(ctx, in.certAddr, ca, in.timeout))
		}
	}
	nameOK := certOK && run(checkNodeNameValid(in.nodeName))
	// A re-join token is bound to the node it replaces: that node existing is the point.
	rejoin := false
	if tokenOK && nameOK {
		bound, _ := token.BoundNode(in.token)
		rejoin = bound != ""
		if rejoin && bound != in.nodeName {
			run(fmt.Errorf("--token is a re-join token for node %q, not for --edgenode-name %q: use --edgenode-name %s, or get a token for this node (keadm gettoken --rejoin %s)",
				bound, in.nodeName, bound, in.nodeName))
		}
	}
	if nameOK && !in.force && !rejoin {
		run(checkNodeName(ctx, in.certAddr, in.nodeName, in.timeout))
	}
	switch len(failed) {
	case 0:
	case 1:
		return errors.New("preflight: 1 check failed (see above); nothing was changed")
	default:
		return fmt.Errorf("preflight: %d checks failed (see above); nothing was changed", len(failed))
	}
	fmt.Fprintf(out, "[preflight] %d checks passed\n", passed)
	return nil
}

// checkBrokerPortFree refuses a broker port something else holds (often a mosquitto service): edgecore would
// start, fail to listen, and mappers would talk to the other broker, which edgecore never hears.
func checkBrokerPortFree(broker string) error {
	u, err := url.Parse(broker)
	if err != nil || u.Host == "" {
		return fmt.Errorf("embedded MQTT broker address %q is not a URL like tcp://127.0.0.1:1883", broker)
	}
	ln, err := net.Listen("tcp", u.Host)
	if err != nil {
		return fmt.Errorf("the embedded MQTT broker cannot listen on %s (%v): stop the broker that holds it "+
			"(systemctl stop mosquitto), or drop --with-mqtt to use that broker", u.Host, unwrapOpError(err))
	}
	return ln.Close()
}

// checkNotJoined refuses to overwrite a node that is joined or still running.
func checkNotJoined(configPath, pidPath string) error {
	if pid, ok := daemon.ReadPIDFile(pidPath, "edgecore"); ok {
		return fmt.Errorf("edgecore is already running (pid %d, %s): run \"keadm reset edge\" first, or pass --force to replace it", pid, pidPath)
	}
	if _, err := os.Stat(configPath); err == nil {
		return fmt.Errorf("this host already joined (%s exists): run \"keadm reset edge\" first, or pass --force to overwrite it", configPath)
	}
	return nil
}

// checkToken catches the usual copy-and-paste and staleness problems before anything is contacted.
func checkToken(tok string, now time.Time) error {
	if _, _, err := token.Parse(tok); err != nil {
		return fmt.Errorf("--token: %w; copy the whole token again from \"keadm gettoken\" on the cloud", err)
	}
	exp, err := token.Expiry(tok)
	if err != nil {
		return fmt.Errorf("--token: %w; copy the whole token again from \"keadm gettoken\" on the cloud", err)
	}
	if !now.Before(exp) {
		return fmt.Errorf("--token: %w at %s (%s ago): get a new one with \"keadm gettoken\" on the cloud",
			token.ErrExpired, exp.UTC().Format(time.RFC3339), duration.HumanDuration(now.Sub(exp)))
	}
	return nil
}

// checkReachable dials addr. With handshake it also completes a TLS handshake (unverified, and its result
// ignored: fetchCA reports TLS problems), only so that cloudcore does not log a "TLS handshake error: EOF" for
// every join.
func checkReachable(ctx context.Context, addr, role, flag string, timeout time.Duration, handshake bool) error {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		_, port, _ := net.SplitHostPort(addr)
		return fmt.Errorf("cannot reach cloudcore's %s port %s: %w; check that cloudcore runs, that %s is right, and that no firewall blocks TCP %s",
			role, addr, unwrapOpError(err), flag, port)
	}
	defer c.Close()
	if handshake {
		_ = c.SetDeadline(time.Now().Add(timeout))
		//nolint:gosec // G402: nothing is trusted from this connection.
		_ = tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}).HandshakeContext(ctx)
	}
	return nil
}

// unwrapOpError drops net.OpError's "dial tcp addr:" prefix, which repeats the address already in the message.
func unwrapOpError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// insecureClient fetches the CA before any trust exists; the CA is then checked against the token's hash,
// which is what makes this safe (KubeEdge does the same).
func insecureClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		//nolint:gosec // G402: verification is replaced by the token's CA hash.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
	}}
}

// fetchCA downloads cloudcore's CA certificate (DER) from GET /ca.crt.
func fetchCA(ctx context.Context, certAddr string, timeout time.Duration) ([]byte, error) {
	u := "https://" + certAddr + "/ca.crt"
	body, status, err := get(ctx, insecureClient(timeout), u)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w; is %s cloudcore's https port (--certport)?", u, err, certAddr)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d %q; is %s cloudcore's https port (--certport)?", u, status, oneLine(body), certAddr)
	}
	if _, err := x509.ParseCertificate(body); err != nil {
		return nil, fmt.Errorf("GET %s did not return a DER certificate (%w); is %s cloudcore's https port (--certport)?", u, err, certAddr)
	}
	return body, nil
}

func checkCAHash(tok string, caDER []byte, certAddr string) error {
	if err := token.VerifyCAHash(tok, caDER); err != nil {
		return fmt.Errorf("--token was not issued by the cloudcore at %s (%w): take the token from this cloudcore (keadm gettoken), or fix --cloudcore-ipport/--certport", certAddr, err)
	}
	return nil
}

// checkServerCert makes sure the address edgecore will use is in cloudcore's certificate: edgecore verifies
// it, and a missing SAN otherwise shows up only as endless reconnects in edgecore's log.
func checkServerCert(ctx context.Context, certAddr string, caDER []byte, timeout time.Duration) error {
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("parsing cloudcore's CA: %w", err)
	}
	host, _, err := net.SplitHostPort(certAddr)
	if err != nil {
		return fmt.Errorf("certificate port address %q: %w", certAddr, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}}
	c, err := d.DialContext(ctx, "tcp", certAddr)
	if err == nil {
		_ = c.Close()
		return nil
	}
	var hostErr x509.HostnameError
	if errors.As(err, &hostErr) && hostErr.Certificate != nil {
		covers := append(ipStrings(hostErr.Certificate.IPAddresses), hostErr.Certificate.DNSNames...)
		return fmt.Errorf("cloudcore's certificate is not valid for %s (it covers %s): join with one of those addresses, or add %s to cloudHub.advertiseAddress (or dnsNames) in cloudcore.yaml and restart cloudcore",
			host, strings.Join(covers, ", "), host)
	}
	return fmt.Errorf("TLS to %s with cloudcore's CA: %w; cloudcore's server certificate was not issued by its CA (check cloudHub.tlsCertFile)", certAddr, unwrapOpError(err))
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func checkNodeNameValid(name string) error {
	if msgs := utilvalidation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fmt.Errorf("--edgenode-name %q is not a valid node name (%s): use lower-case letters, digits, '-' and '.'", name, strings.Join(msgs, "; "))
	}
	return nil
}

// checkNodeName asks cloudcore whether the name is taken (GET /node/{name}: 200 taken, 404 free), since a
// second host under the same name would fight the first over the node's pods and status.
func checkNodeName(ctx context.Context, certAddr, name string, timeout time.Duration) error {
	u := "https://" + certAddr + "/node/" + url.PathEscape(name)
	body, status, err := get(ctx, insecureClient(timeout), u)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	switch status {
	case http.StatusNotFound:
		return nil
	case http.StatusOK:
		return fmt.Errorf("node %q already exists in the cluster: choose another --edgenode-name, or, to replace that edge node, join with a token from \"keadm gettoken --rejoin %s\" on the cloud", name, name)
	}
	return fmt.Errorf("GET %s: unexpected status %d %q", u, status, oneLine(body))
}

func get(ctx context.Context, c *http.Client, u string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is already in the caller's message
		}
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return body, resp.StatusCode, err
}

func oneLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 100 {
		s = s[:100]
	}
	return s
}

// socketPath turns a CRI endpoint into a filesystem path.
func socketPath(endpoint string) (string, error) {
	p, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok && strings.HasPrefix(endpoint, "/") {
		p, ok = endpoint, true
	}
	if !ok || !filepath.IsAbs(p) {
		return "", fmt.Errorf("--remote-runtime-endpoint %q: want unix:///absolute/path/to/containerd.sock", endpoint)
	}
	return p, nil
}

func checkRuntimeSocket(endpoint string) error {
	p, err := socketPath(endpoint)
	if err != nil {
		return err
	}
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("container runtime socket %s does not exist: install and start containerd, or point --remote-runtime-endpoint at its socket", p)
	case err != nil:
		return fmt.Errorf("container runtime socket %s: %w", p, err)
	case fi.Mode().Type() != os.ModeSocket:
		return fmt.Errorf("container runtime endpoint %s is not a socket: point --remote-runtime-endpoint at containerd's socket", p)
	}
	return nil
}

// containerdConfigsFor lists where containerd's config may be: next to its socket (private instances, as
// hack/local-containerd.sh makes them) and the system location.
func containerdConfigsFor(endpoint string) []string {
	var files []string
	if p, err := socketPath(endpoint); err == nil {
		files = append(files, filepath.Join(filepath.Dir(p), "config.toml"))
	}
	return append(files, containerdConfs...)
}

var systemdCgroupRE = regexp.MustCompile(`^\s*SystemdCgroup\s*=\s*(true|false)\b`)

// containerdSystemdCgroup reads runc's SystemdCgroup from the first readable containerd config that sets it.
// It is a line match, not a TOML parse: best effort, and the first runtime listed is runc in the default config.
func containerdSystemdCgroup(files []string) (systemd bool, file string, found bool) {
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			if m := systemdCgroupRE.FindStringSubmatch(sc.Text()); m != nil {
				_ = fh.Close()
				return m[1] == "true", f, true
			}
		}
		_ = fh.Close()
	}
	return false, "", false
}

// detectCgroupDriver follows containerd when its config says which driver it uses, since the two must agree;
// otherwise it takes systemd where systemd owns the cgroup tree and cgroupfs everywhere else.
func detectCgroupDriver(containerdConfigs []string, systemdOwnsCgroups bool) string {
	if systemd, _, found := containerdSystemdCgroup(containerdConfigs); found {
		if systemd {
			return v1alpha2.CgroupDriverSystemd
		}
		return v1alpha2.CgroupDriverCgroupfs
	}
	if systemdOwnsCgroups {
		return v1alpha2.CgroupDriverSystemd
	}
	return v1alpha2.CgroupDriverCgroupfs
}

// systemdOwnsCgroups: a host booted by systemd with cgroup v2 only, where systemd owns the cgroup tree.
func systemdOwnsCgroups() bool { return daemon.SystemdBooted() && exists(cgroupV2Marker) }

func checkCgroupDriver(driver string, containerdConfigs []string) error {
	systemd, file, found := containerdSystemdCgroup(containerdConfigs)
	if !found {
		return nil
	}
	want := v1alpha2.CgroupDriverCgroupfs
	if systemd {
		want = v1alpha2.CgroupDriverSystemd
	}
	if driver != want {
		return fmt.Errorf("--cgroupdriver %s, but containerd (%s) sets SystemdCgroup = %v: pass --cgroupdriver %s (or leave it out), or change containerd's config and restart it",
			driver, file, systemd, want)
	}
	return nil
}

// findEdgecore picks the binary to install: the flag, else edgecore next to keadm (release archives ship them
// together), else PATH. Nothing is downloaded.
func findEdgecore(flag string) (string, error) {
	if flag != "" {
		if err := isExecutableFile(flag); err != nil {
			return "", fmt.Errorf("--edgecore-binary %s: %w", flag, err)
		}
		return filepath.Abs(flag)
	}
	var next string
	if exe, err := os.Executable(); err == nil {
		next = filepath.Join(filepath.Dir(exe), "edgecore")
		if isExecutableFile(next) == nil {
			return next, nil
		}
	}
	if p, err := exec.LookPath("edgecore"); err == nil {
		return filepath.Abs(p)
	}
	return "", fmt.Errorf("no edgecore binary next to keadm (%s) or on PATH: build it (make edgecore) or pass --edgecore-binary", next)
}

func isExecutableFile(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
