// Command web-controller-app is the cloud half of the counter demo: a web page with ON, OFF and STATUS that
// writes the desired value of the counter Device's "status" twin and shows the count the edge reports.
//
//	web-controller-app [--port 8089] [--kubeconfig FILE] [--device counter] [--namespace default]
//
// Every flag has an environment variable (see flags below); a flag given on the command line wins. Without
// --kubeconfig it uses $KUBECONFIG, then the in-cluster service account, then ~/.kube/config.
//
// The page and API are beego v2 routes (internal/server), served by this program's own http.Server so that
// SIGTERM shuts them down gracefully; beego's web.Run, with its banner, signal handling and config files, is
// not used. Before main runs, beego's config package prints one line to stderr when the working directory
// has no conf/app.conf ("init global config instance failed ..."): harmless, and beyond the reach of any code
// here; an empty conf/app.conf silences it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/examples/counter-demo/web-controller-app/internal/device"
	"github.com/tether-edge/tether/examples/counter-demo/web-controller-app/internal/server"
	"github.com/tether-edge/tether/pkg/apis/scheme"
)

type options struct {
	address    string
	port       int
	kubeconfig string
	namespace  string
	device     string
	property   string
}

// parseFlags reads args, with defaults from getenv.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) (*options, error) {
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	port, err := strconv.Atoi(env("COUNTER_WEB_PORT", "8089"))
	if err != nil {
		return nil, fmt.Errorf("COUNTER_WEB_PORT: %w", err)
	}
	o := &options{}
	fs.StringVar(&o.address, "address", env("COUNTER_WEB_ADDRESS", ""), "IP address to listen on, empty for all (env COUNTER_WEB_ADDRESS)")
	fs.IntVar(&o.port, "port", port, "TCP port of the page and API (env COUNTER_WEB_PORT)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG, then in-cluster, then ~/.kube/config")
	fs.StringVar(&o.namespace, "namespace", env("COUNTER_DEVICE_NAMESPACE", "default"), "namespace of the Device (env COUNTER_DEVICE_NAMESPACE)")
	fs.StringVar(&o.device, "device", env("COUNTER_DEVICE_NAME", "counter"), "name of the Device (env COUNTER_DEVICE_NAME)")
	fs.StringVar(&o.property, "property", env("COUNTER_PROPERTY", "status"), "twin property holding ON/OFF and the count (env COUNTER_PROPERTY)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.port < 1 || o.port > 65535 {
		return nil, fmt.Errorf("--port %d: want 1-65535", o.port)
	}
	return o, nil
}

// restConfig finds the API server: --kubeconfig, $KUBECONFIG, the in-cluster service account, ~/.kube/config.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" && os.Getenv(clientcmd.RecommendedConfigPathEnvVar) == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no API server configuration (not in a pod, no kubeconfig): %w", err)
	}
	return cfg, nil
}

func run(ctx context.Context, o *options) error {
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	// One STATUS a second per open page; client-go's default of 5 QPS would throttle a few tabs.
	cfg.QPS, cfg.Burst = 20, 40
	cfg.UserAgent = "tether-counter-web-controller-app"
	s, err := scheme.New()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return fmt.Errorf("creating the API client: %w", err)
	}
	twin, err := device.New(c, o.namespace, o.device, o.property)
	if err != nil {
		return err
	}
	// A missing Device is not fatal: the page says so until the instance is applied.
	checkCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if st, err := twin.Status(checkCtx); err != nil {
		klog.ErrorS(err, "Cannot read the device yet; serving anyway", "device", twin.Key())
	} else {
		klog.InfoS("Device found", "device", twin.Key(), "property", o.property, "desired", st.Status, "reported", st.Value)
	}
	cancel()

	addr := net.JoinHostPort(o.address, strconv.Itoa(o.port))
	srv := &http.Server{
		Addr:              addr,
		Handler:           server.New(twin, twin.Key().String()),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	klog.InfoS("Counter web app listening", "address", addr, "device", twin.Key())
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", addr, err)
	case <-ctx.Done():
	}
	klog.InfoS("Shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func main() {
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	klog.InitFlags(fs)
	o, err := parseFlags(fs, os.Args[1:], os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "web-controller-app:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		klog.ErrorS(err, "web-controller-app failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}
