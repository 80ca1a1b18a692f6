package cloud

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/cloud/cloudhub/certificate"
	"github.com/tether-edge/tether/keadm/app/daemon"
	"github.com/tether-edge/tether/keadm/app/paths"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	"github.com/tether-edge/tether/pkg/util/configload"
)

// unitFile is build/tools/cloudcore.service; a test keeps this copy identical, since go:embed cannot reach
// outside the package directory.
//
//go:embed cloudcore.service
var unitFile []byte

const crdTimeout = time.Minute

type initOptions struct {
	kubeConfig      string
	advertise       []string
	domainNames     []string
	cloudcoreBinary string
	noSystemd       bool
	wsPort          int32
	httpsPort       int32
	monitorAddress  string
	dryRun          bool
	force           bool
	timeout         time.Duration
}

func defaultInitOptions() initOptions {
	return initOptions{
		wsPort:         v1alpha1.DefaultWebSocketPort,
		httpsPort:      v1alpha1.DefaultHTTPSPort,
		monitorAddress: "127.0.0.1:9091",
		timeout:        2 * time.Minute,
	}
}

// env is what init and reset take from the host; tests replace parts of it.
type env struct {
	newClients    newClientsFunc
	systemdBooted func() bool
	detectIP      func() (net.IP, error)
	// stopGrace is how long cloudcore gets to exit on SIGTERM before SIGKILL.
	stopGrace time.Duration
}

func defaultEnv() env {
	return env{
		newClients:    loadClients,
		systemdBooted: daemon.SystemdBooted,
		detectIP:      utilnet.ChooseHostInterface,
		stopGrace:     15 * time.Second,
	}
}

func newInitCommand(layout *paths.Layout, e env) *cobra.Command {
	o := defaultInitOptions()
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Install cloudcore next to a Kubernetes API server",
		Long: `Install cloudcore on this host: check the API server and the ports, apply the CRDs, create namespace
kubeedge, write /etc/kubeedge/config/cloudcore.yaml, install /usr/local/bin/cloudcore and start it (a systemd
unit when systemd runs the host, else a detached process with a PID file), then wait for the join token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := absLayout(layout)
			if err != nil {
				return err
			}
			r := &initRunner{opts: o, layout: l, core: cloudcore(l), env: e, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr()}
			return r.run(cmd.Context())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.kubeConfig, "kube-config", o.kubeConfig, "kubeconfig of a cluster admin; cloudcore uses it too (default $KUBECONFIG, else ~/.kube/config)")
	fs.StringSliceVar(&o.advertise, "advertise-address", nil, "IPs edge nodes reach cloudcore at, comma-separated; each one is an IP SAN of the server certificate (default: the default-route interface's IP)")
	fs.StringSliceVar(&o.domainNames, "domainname", nil, "DNS names edge nodes reach cloudcore at, comma-separated; each one is a DNS SAN of the server certificate")
	fs.StringVar(&o.cloudcoreBinary, "cloudcore-binary", "", "cloudcore binary to install (default: the cloudcore next to keadm, else the one in PATH; nothing is downloaded)")
	fs.BoolVar(&o.noSystemd, "no-systemd", false, "never use systemd: start cloudcore detached, logging to /var/log/kubeedge/cloudcore.log, PID in /var/run/kubeedge/cloudcore.pid")
	fs.BoolVar(&o.noSystemd, "foreground", false, "same as --no-systemd")
	fs.Int32Var(&o.wsPort, "websocket-port", o.wsPort, "port of cloudcore's websocket server, which edge nodes connect to")
	fs.Int32Var(&o.httpsPort, "https-port", o.httpsPort, "port of cloudcore's certificate server, where edge nodes trade the token for a certificate")
	fs.StringVar(&o.monitorAddress, "monitor-address", o.monitorAddress, "host:port of cloudcore's metrics server; empty disables it")
	fs.BoolVar(&o.dryRun, "dry-run", false, "run the checks and print each step without changing anything")
	fs.BoolVar(&o.force, "force", false, "overwrite an existing installation (its cloudcore is stopped first)")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "how long to wait for cloudcore to serve and publish the join token")
	return cmd
}

// absLayout resolves --root: cloudcore.yaml holds absolute paths, and systemd starts cloudcore in /.
func absLayout(l *paths.Layout) (paths.Layout, error) {
	root := l.Root
	if root == "" {
		root = "/"
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return paths.Layout{}, fmt.Errorf("--root %s: %w", root, err)
	}
	return paths.Layout{Root: abs}, nil
}

// validate checks the flags before anything is touched and returns the advertise addresses, detected when
// none is given.
func (o *initOptions) validate(detect func() (net.IP, error)) (advertise []string, detected bool, err error) {
	for _, a := range o.advertise {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		ip := net.ParseIP(a)
		switch {
		case ip == nil:
			return nil, false, fmt.Errorf("--advertise-address %q is not an IP address (DNS names go in --domainname)", a)
		case ip.IsUnspecified():
			return nil, false, fmt.Errorf("--advertise-address %q is a wildcard: give an address edge nodes can reach", a)
		}
		advertise = append(advertise, ip.String())
	}
	if len(advertise) == 0 {
		ip, err := detect()
		if err != nil || ip == nil {
			return nil, false, fmt.Errorf("--advertise-address is required: no default-route interface to take the address from (%v)", err)
		}
		advertise, detected = []string{ip.String()}, true
	}
	var names []string
	for _, n := range o.domainNames {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			return nil, false, fmt.Errorf("--domainname %q is not a DNS name: %s", n, strings.Join(errs, "; "))
		}
		names = append(names, n)
	}
	o.domainNames = names
	for _, p := range []struct {
		flag string
		port int32
	}{{"--websocket-port", o.wsPort}, {"--https-port", o.httpsPort}} {
		if p.port < 1 || p.port > 65535 {
			return nil, false, fmt.Errorf("%s %d is out of range 1-65535", p.flag, p.port)
		}
	}
	if o.wsPort == o.httpsPort {
		return nil, false, fmt.Errorf("--websocket-port and --https-port are both %d: they need two ports", o.wsPort)
	}
	if o.monitorAddress != "" {
		host, port, err := net.SplitHostPort(o.monitorAddress)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 || net.ParseIP(host) == nil {
			return nil, false, fmt.Errorf("--monitor-address %q is not IP:port (empty disables the metrics server)", o.monitorAddress)
		}
	}
	if o.timeout <= 0 {
		return nil, false, fmt.Errorf("--timeout %s must be positive", o.timeout)
	}
	return advertise, detected, nil
}

// cloudCoreConfig is the full default config with what init decides: how to reach the API server, what to
// advertise, where the certificates live under the root, the ports.
func cloudCoreConfig(l paths.Layout, o initOptions, kubeconfig string, advertise []string) *v1alpha1.CloudCore {
	cfg := v1alpha1.NewDefaultCloudCore()
	cfg.KubeAPIConfig.KubeConfig = kubeconfig
	cfg.CommonConfig.MonitorServer.BindAddress = o.monitorAddress
	hub := cfg.Modules.CloudHub
	hub.AdvertiseAddress = advertise
	hub.DNSNames = append([]string{}, o.domainNames...)
	hub.TLSCAFile = filepath.Join(l.CADir(), "rootCA.crt")
	hub.TLSCAKeyFile = filepath.Join(l.CADir(), "rootCA.key")
	hub.TLSCertFile = filepath.Join(l.CertsDir(), "server.crt")
	hub.TLSPrivateKeyFile = filepath.Join(l.CertsDir(), "server.key")
	hub.WebSocket.Port = o.wsPort
	hub.HTTPS.Port = o.httpsPort
	hub.UnixSocket.Address = "unix://" + filepath.Join(l.StateDir(), "kubeedge.sock")
	return cfg
}

type initRunner struct {
	opts   initOptions
	layout paths.Layout
	core   daemon.Daemon
	env    env
	out    io.Writer
	errOut io.Writer
}

// say prints one step as one line.
func (r *initRunner) say(step, format string, args ...any) {
	fmt.Fprintf(r.out, "[%s] %s\n", step, fmt.Sprintf(format, args...))
}

// installed is what an earlier init left under the root.
type installed struct {
	config, unit bool
	pids         []int
}

func inspect(d daemon.Daemon) installed {
	return installed{config: fileExists(d.Config()), unit: fileExists(d.UnitFile()), pids: d.Processes()}
}

func (i installed) any() bool { return i.config || i.unit || len(i.pids) > 0 }

func (i installed) String(d daemon.Daemon) string {
	switch {
	case len(i.pids) > 0:
		return fmt.Sprintf("%s runs (pid %s)", d.Binary(), daemon.JoinPIDs(i.pids))
	case i.config:
		return d.Config() + " exists"
	default:
		return d.UnitFile() + " exists"
	}
}

type preflightResult struct {
	clients    *clients
	binary     string
	binVersion string
	existing   installed
	// portsDeferred: the ports are held by the cloudcore --force replaces; they are checked once it stopped.
	portsDeferred bool
}

func (r *initRunner) run(ctx context.Context) error {
	advertise, detected, err := r.opts.validate(r.env.detectIP)
	if err != nil {
		return err
	}
	useSystemd := !r.opts.noSystemd && daemon.UseSystemd(r.layout, r.env.systemdBooted)
	if r.opts.dryRun {
		r.say("dry-run", "checks run for real; nothing is changed")
	}

	pf, err := r.preflight(ctx)
	if err != nil {
		return fmt.Errorf("preflight: %w", err)
	}
	c := pf.clients
	cfg := cloudCoreConfig(r.layout, r.opts, c.kubeconfig, advertise)
	if errs := cfg.Validate(); len(errs) > 0 {
		return fmt.Errorf("the cloudcore config keadm would write is invalid: %w", errs.ToAggregate())
	}

	if pf.existing.any() {
		if err := r.stopExisting(ctx, pf, useSystemd); err != nil {
			return err
		}
	}
	if err := r.applyCRDs(ctx, c); err != nil {
		return fmt.Errorf("crds: %w", err)
	}
	if err := r.createNamespace(ctx, c); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	if err := r.writeConfig(cfg, detected); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := r.installBinary(pf.binary); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	exited, err := r.start(ctx, useSystemd)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	if r.opts.dryRun {
		r.say("wait", "would wait up to %s until ports %d and %d accept connections and Secret %s/%s holds the join token",
			r.opts.timeout, r.opts.wsPort, r.opts.httpsPort, certificate.Namespace, certificate.TokenSecretName)
		fmt.Fprintln(r.out, "dry run done: nothing was changed")
		return nil
	}
	if err := r.waitReady(ctx, c, exited, useSystemd); err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	r.printNext(c, advertise[0])
	return nil
}

// preflight checks, in order, everything that can be checked without changing anything; the first failure
// is returned as one line saying how to fix it.
func (r *initRunner) preflight(ctx context.Context) (*preflightResult, error) {
	if filepath.Clean(r.layout.Root) == "/" && os.Geteuid() != 0 && !r.opts.dryRun {
		return nil, errors.New("keadm init writes /etc/kubeedge, /usr/local/bin and systemd units: run it as root (sudo), or use --root")
	}
	pf := &preflightResult{existing: inspect(r.core)}
	if pf.existing.any() && !r.opts.force {
		return nil, fmt.Errorf("cloudcore is already installed under %s (%s): run `keadm reset cloud` first, or pass --force to overwrite",
			r.layout.Root, pf.existing.String(r.core))
	}
	var err error
	if pf.binary, pf.binVersion, err = findCloudCore(ctx, r.opts.cloudcoreBinary); err != nil {
		return nil, err
	}
	if pf.clients, err = r.env.newClients(r.opts.kubeConfig); err != nil {
		return nil, err
	}
	serverVersion, err := pf.clients.serverVersion(ctx)
	if err != nil {
		return nil, err
	}
	if err := pf.clients.checkAccess(ctx); err != nil {
		return nil, err
	}
	ports := "ports " + r.portList() + " free"
	if len(pf.existing.pids) > 0 {
		pf.portsDeferred = true
		ports = "ports checked once the running cloudcore is stopped"
	} else if err := r.checkPorts(); err != nil {
		return nil, err
	}
	r.say("preflight", "ok: %s (%s), API server %s (%s), permissions, %s", pf.binVersion, pf.binary, pf.clients.host, serverVersion, ports)
	return pf, nil
}

func (r *initRunner) portList() string {
	s := fmt.Sprintf("%d, %d", r.opts.wsPort, r.opts.httpsPort)
	if r.opts.monitorAddress != "" {
		_, p, _ := net.SplitHostPort(r.opts.monitorAddress)
		s += ", " + p
	}
	return s
}

// checkPorts binds what cloudcore will bind, so the answer is the one cloudcore would get.
func (r *initRunner) checkPorts() error {
	checks := []struct{ what, addr, flag string }{
		{"websocket", net.JoinHostPort("0.0.0.0", strconv.Itoa(int(r.opts.wsPort))), "--websocket-port"},
		{"https", net.JoinHostPort("0.0.0.0", strconv.Itoa(int(r.opts.httpsPort))), "--https-port"},
	}
	if r.opts.monitorAddress != "" {
		checks = append(checks, struct{ what, addr, flag string }{"metrics", r.opts.monitorAddress, "--monitor-address"})
	}
	for _, c := range checks {
		ln, err := net.Listen("tcp", c.addr)
		if err == nil {
			ln.Close()
			continue
		}
		_, port, _ := net.SplitHostPort(c.addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("port %s (%s) is in use: stop what listens there (see `ss -ltnp 'sport = :%s'`), or choose another with %s",
				port, c.what, port, c.flag)
		}
		return fmt.Errorf("cannot listen on %s (%s): %w; choose another with %s", c.addr, c.what, err, c.flag)
	}
	return nil
}

// findCloudCore resolves the binary to install and checks that it runs here (right architecture, really
// cloudcore) by asking its version.
func findCloudCore(ctx context.Context, flag string) (path, version string, err error) {
	switch {
	case flag != "":
		path = flag
	default:
		var next string
		if exe, err := os.Executable(); err == nil {
			next = filepath.Join(filepath.Dir(exe), "cloudcore")
		}
		if st, err := os.Stat(next); next != "" && err == nil && !st.IsDir() {
			path = next
		} else if p, err := exec.LookPath("cloudcore"); err == nil {
			path = p
		} else {
			return "", "", fmt.Errorf("no cloudcore binary next to keadm (%s) nor in PATH: pass --cloudcore-binary (keadm downloads nothing)", next)
		}
	}
	if path, err = filepath.Abs(path); err != nil {
		return "", "", fmt.Errorf("--cloudcore-binary %s: %w", flag, err)
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", "", fmt.Errorf("cloudcore binary %s is missing or not executable: pass --cloudcore-binary with a built cloudcore", path)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil || !strings.HasPrefix(line, "cloudcore ") {
		return "", "", fmt.Errorf("%s is not a working cloudcore (`%s --version` gave %q, %v): pass --cloudcore-binary with a cloudcore built for this machine",
			path, path, line, err)
	}
	return path, line, nil
}

// stopExisting stops the cloudcore --force replaces, then checks the ports it held.
func (r *initRunner) stopExisting(ctx context.Context, pf *preflightResult, useSystemd bool) error {
	what := pf.existing.String(r.core)
	if r.opts.dryRun {
		r.say("replace", "would stop and replace the existing install (%s)", what)
		return nil
	}
	stopped, err := stopCloudCore(ctx, r.core, useSystemd, r.env.stopGrace)
	if err != nil {
		return fmt.Errorf("replace: %w", err)
	}
	r.say("replace", "replacing the existing install (%s); %s", what, stopped)
	if pf.portsDeferred {
		if err := r.checkPorts(); err != nil {
			return fmt.Errorf("preflight: %w", err)
		}
	}
	return nil
}

func (r *initRunner) applyCRDs(ctx context.Context, c *clients) error {
	list, err := embeddedCRDs()
	if err != nil {
		return err
	}
	names := make([]string, len(list))
	for i, d := range list {
		names[i] = d.name
	}
	if r.opts.dryRun {
		r.say("crds", "would apply %d CRDs (%s) and wait until they are Established", len(list), strings.Join(names, ", "))
		return nil
	}
	if err := applyCRDs(ctx, c, list); err != nil {
		return err
	}
	if err := waitEstablished(ctx, c, list, crdTimeout); err != nil {
		return err
	}
	r.say("crds", "applied and Established: %s", strings.Join(names, ", "))
	return nil
}

func (r *initRunner) createNamespace(ctx context.Context, c *clients) error {
	ns := certificate.Namespace
	if r.opts.dryRun {
		if _, err := c.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
			r.say("namespace", "%s exists", ns)
		} else {
			r.say("namespace", "would create namespace %s", ns)
		}
		return nil
	}
	_, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{FieldManager: fieldManager})
	switch {
	case apierrors.IsAlreadyExists(err):
		r.say("namespace", "%s exists", ns)
	case err != nil:
		return fmt.Errorf("create namespace %s: %w", ns, err)
	default:
		r.say("namespace", "created %s", ns)
	}
	return nil
}

func (r *initRunner) writeConfig(cfg *v1alpha1.CloudCore, detected bool) error {
	data, err := configload.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("render cloudcore.yaml: %w", err)
	}
	hub := cfg.Modules.CloudHub
	sans := strings.Join(append(append([]string{}, hub.AdvertiseAddress...), hub.DNSNames...), ", ")
	if detected {
		sans += " (detected; set with --advertise-address)"
	}
	summary := fmt.Sprintf("server certificate SANs %s, websocket :%d, https :%d", sans, hub.WebSocket.Port, hub.HTTPS.Port)
	if r.opts.dryRun {
		r.say("config", "would write %s: %s", r.core.Config(), summary)
		return nil
	}
	klog.V(2).InfoS("Writing cloudcore config", "path", r.core.Config(), "content", string(data))
	// The CA key will live here: other users have no business in these directories.
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{r.layout.ConfigDir(), 0o755}, {r.layout.CADir(), 0o700}, {r.layout.CertsDir(), 0o700}, {r.layout.StateDir(), 0o755}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return err
		}
	}
	if err := daemon.WriteFileAtomic(r.core.Config(), data, 0o644); err != nil {
		return err
	}
	r.say("config", "wrote %s: %s", r.core.Config(), summary)
	return nil
}

func (r *initRunner) installBinary(src string) error {
	dst := r.core.Binary()
	var copied bool
	if r.opts.dryRun {
		copied = !daemon.SameFile(src, dst)
	} else {
		var err error
		if copied, err = r.core.InstallBinary(src); err != nil {
			return err
		}
	}
	switch {
	case !copied:
		r.say("install", "%s is already in place", dst)
	case r.opts.dryRun:
		r.say("install", "would copy %s to %s", src, dst)
	default:
		r.say("install", "copied %s to %s", src, dst)
	}
	return nil
}

// start returns a channel that yields cloudcore's exit when keadm started it itself (nil under systemd).
func (r *initRunner) start(ctx context.Context, useSystemd bool) (<-chan error, error) {
	d := r.core
	if useSystemd {
		if r.opts.dryRun {
			r.say("start", "would write %s, then systemctl daemon-reload and systemctl enable --now %s", d.UnitFile(), d.UnitName())
			return nil, nil
		}
		if err := d.InstallUnit(ctx, unitFile); err != nil {
			return nil, err
		}
		if err := daemon.Systemctl(ctx, "enable", "--now", d.UnitName()); err != nil {
			return nil, err
		}
		r.say("start", "%s enabled and started (logs: journalctl -u cloudcore)", d.UnitName())
		return nil, nil
	}
	if r.opts.dryRun {
		r.say("start", "would start %s --config %s detached, log %s, PID file %s", d.Binary(), d.Config(), d.LogFile(), d.PIDFile())
		return nil, nil
	}
	s, err := d.Start()
	if err != nil {
		return nil, err
	}
	r.say("start", "cloudcore runs detached (pid %d), log %s", s.PID, d.LogFile())
	return s.Exited, nil
}

// waitReady waits until edge nodes could join: both ports accept connections and the join token exists.
func (r *initRunner) waitReady(ctx context.Context, c *clients, exited <-chan error, useSystemd bool) error {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.opts.timeout)
	defer cancel()
	logRef := "log " + r.core.LogFile()
	if useSystemd {
		logRef = "see journalctl -u cloudcore"
	}
	for {
		var missing []string
		for _, p := range []struct {
			what string
			port int32
		}{{"websocket", r.opts.wsPort}, {"https", r.opts.httpsPort}} {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p.port))), time.Second)
			if err != nil {
				missing = append(missing, fmt.Sprintf("%s port %d not accepting connections", p.what, p.port))
				continue
			}
			conn.Close()
		}
		if tok, err := c.joinToken(ctx); err != nil || tok == "" {
			missing = append(missing, fmt.Sprintf("no join token in Secret %s/%s", certificate.Namespace, certificate.TokenSecretName))
		}
		if len(missing) == 0 {
			r.say("wait", "cloudcore ready in %.1fs: ports %d and %d accept connections, join token published",
				time.Since(begin).Seconds(), r.opts.wsPort, r.opts.httpsPort)
			return nil
		}
		select {
		case err := <-exited:
			r.printLogTail(ctx, useSystemd)
			return fmt.Errorf("cloudcore exited right after start (%v); %s", exitStatus(err), logRef)
		case <-ctx.Done():
			if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				return fmt.Errorf("interrupted while cloudcore starts (it keeps running; `keadm reset cloud` stops it): %w", context.Cause(ctx))
			}
			r.printLogTail(context.Background(), useSystemd)
			return fmt.Errorf("cloudcore not ready within %s: %s; %s (`keadm reset cloud` undoes the install)",
				r.opts.timeout, strings.Join(missing, ", "), logRef)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func (r *initRunner) printLogTail(ctx context.Context, useSystemd bool) {
	var lines []string
	src := r.core.LogFile()
	if useSystemd {
		src = "journalctl -u cloudcore"
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, "journalctl", "-u", r.core.UnitName(), "-n", "20", "--no-pager", "-o", "cat").Output()
		if s := strings.TrimRight(string(out), "\n"); s != "" {
			lines = strings.Split(s, "\n")
		}
	} else {
		lines = daemon.Tail(src, 20)
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(r.errOut, "last lines of %s:\n", src)
	for _, l := range lines {
		fmt.Fprintf(r.errOut, "  %s\n", l)
	}
}

func (r *initRunner) printNext(c *clients, addr string) {
	getToken := "keadm gettoken"
	if def, err := filepath.Abs(defaultKubeConfig()); err != nil || def != c.kubeconfig {
		getToken += " --kube-config=" + c.kubeconfig
	}
	join := fmt.Sprintf("keadm join --cloudcore-ipport=%s --token=<token>", net.JoinHostPort(addr, strconv.Itoa(int(r.opts.wsPort))))
	if r.opts.httpsPort != v1alpha1.DefaultHTTPSPort {
		join += fmt.Sprintf(" --certport=%d", r.opts.httpsPort)
	}
	fmt.Fprintf(r.out, "\ncloudcore is running. To add an edge node, print the join token here:\n  %s\nthen run on the edge node:\n  %s\n", getToken, join)
}
