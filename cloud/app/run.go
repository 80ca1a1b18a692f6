package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/cloud/cloudhub"
	"github.com/tether-edge/tether/cloud/cloudhub/certificate"
	"github.com/tether-edge/tether/cloud/cloudhub/httpserver"
	"github.com/tether-edge/tether/cloud/cloudhub/revocation"
	"github.com/tether-edge/tether/cloud/devicecontroller"
	"github.com/tether-edge/tether/cloud/edgecontroller"
	"github.com/tether-edge/tether/cloud/synccontroller"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/cloudcore/v1alpha1"
	rsv1alpha1 "github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	tetherscheme "github.com/tether-edge/tether/pkg/apis/scheme"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/metrics"
	"github.com/tether-edge/tether/pkg/security/nodeauthz"
)

// Option adjusts how Run assembles cloudcore.
type Option func(*runOptions)

type runOptions struct {
	extraModules func(*beehive.Bus) []beehive.Module
	syncPeriod   time.Duration
	hub          func(*cloudhub.Options)
	authorizer   func(*nodeauthz.Authorizer)
}

// WithModules registers more modules on cloudcore's bus; tests use it to stand in for modules of later stages.
func WithModules(f func(*beehive.Bus) []beehive.Module) Option {
	return func(o *runOptions) { o.extraModules = f }
}

// WithSyncPeriod overrides SyncController's reconcile period (tests).
func WithSyncPeriod(d time.Duration) Option { return func(o *runOptions) { o.syncPeriod = d } }

// WithAuthorizer hands the node authorizer to f once it exists, so tests can wait for the graph to hold what they
// set up.
func WithAuthorizer(f func(*nodeauthz.Authorizer)) Option {
	return func(o *runOptions) { o.authorizer = f }
}

// WithCloudHubOptions adjusts CloudHub's options (timeouts in tests).
func WithCloudHubOptions(f func(*cloudhub.Options)) Option { return func(o *runOptions) { o.hub = f } }

// Run runs cloudcore with a loaded, validated config until ctx is cancelled, and returns nil on a clean shutdown.
func Run(ctx context.Context, cfg *v1alpha1.CloudCore, opts ...Option) error {
	var o runOptions
	for _, opt := range opts {
		opt(&o)
	}
	rc, err := restConfig(*cfg.KubeAPIConfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("creating Kubernetes client: %w", err)
	}
	scheme, err := tetherscheme.New()
	if err != nil {
		return err
	}
	// The cache serves the controllers' reads; CloudHub writes ObjectSyncs and must read its own writes, so it
	// gets a direct client.
	// Protobuf for built-in types only: our CRDs have no protobuf encoding.
	crdRC := crdRestConfig(rc)
	objCache, err := cache.New(crdRC, cache.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating informer cache: %w", err)
	}
	// CloudHub reads sync records from the cache on its delivery path; their informers must be running before it
	// asks, or the first read would wait for a list from the API server.
	for _, obj := range []client.Object{&rsv1alpha1.ObjectSync{}, &rsv1alpha1.ClusterObjectSync{}} {
		if _, err := objCache.GetInformer(ctx, obj, cache.BlockUntilSynced(false)); err != nil {
			return fmt.Errorf("creating the %T informer: %w", obj, err)
		}
	}
	direct, err := client.NewWithWatch(crdRC, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating API client: %w", err)
	}

	hubCfg := *cfg.Modules.CloudHub
	bundle, err := certificate.Prepare(ctx, kube, hubCfg, time.Now)
	if err != nil {
		return fmt.Errorf("preparing certificates: %w", err)
	}
	reg := metrics.NewRegistry()
	bus := beehive.New(beehive.Options{})

	if a := hubCfg.Authorization; a != nil && (!a.Enable || a.Debug) {
		klog.InfoS("cloudHub.authorization asks for no enforcement; Tether's node authorizer is always on and refuses what a node may not do",
			"enable", a.Enable, "debug", a.Debug)
	}
	// One set of informers serves EdgeController, the node authorizer and the revocation list, so they all see a
	// pod or a Node at the same moment.
	inf := edgecontroller.NewInformers(kube)
	authz, err := nodeauthz.New(nodeauthz.Options{Pods: inf.Pods(), Nodes: inf.NodeLister(), Registerer: reg})
	if err != nil {
		return err
	}
	if o.authorizer != nil {
		o.authorizer(authz)
	}
	// Certificate deny-list; deleting an edge Node revokes its certificates.
	revocations, err := revocation.New(revocation.Options{Kube: kube, NodeInformer: inf.Nodes(), Registerer: reg})
	if err != nil {
		return err
	}
	hubOpts := cloudhub.Options{
		Config:     hubCfg,
		Bus:        bus,
		Client:     direct,
		Reader:     objCache,
		TLSConfig:  bundle.ServerTLSConfig(tls.RequireAndVerifyClientCert),
		Registerer: reg,
		Revocation: revocations,
		Authorizer: authz,
	}
	if o.hub != nil {
		o.hub(&hubOpts)
	}
	mods := []beehive.Module{
		cloudhub.New(hubOpts),
		edgecontroller.New(edgecontroller.Options{Bus: bus, Kube: kube, Config: *cfg.Modules.EdgeController,
			Informers: inf, Authorizer: authz}),
		devicecontroller.New(devicecontroller.Options{Bus: bus, Client: direct, Config: *cfg.Modules.DeviceController}),
		synccontroller.New(synccontroller.Options{
			Reader: objCache, Writer: direct, Sender: bus,
			Period: o.syncPeriod, Enabled: cfg.Modules.SyncController.Enable, Authorizer: authz,
		}),
	}
	if o.extraModules != nil {
		mods = append(mods, o.extraModules(bus)...)
	}
	for _, m := range mods {
		if err := bus.Register(m); err != nil {
			return fmt.Errorf("registering module %s: %w", m.Name(), err)
		}
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return objCache.Start(ctx) })
	g.Go(func() error {
		inf.Start(ctx.Done())
		<-ctx.Done()
		inf.Shutdown()
		return nil
	})
	g.Go(func() error { return revocations.Run(ctx) })
	if !objCache.WaitForCacheSync(ctx) || !inf.WaitForCacheSync(ctx) {
		return fmt.Errorf("informer caches did not sync: %w", context.Cause(ctx))
	}
	if hubCfg.Enable {
		g.Go(func() error {
			return certificate.NewTokenManager(kube, bundle, certificate.TokenRefreshInterval(hubCfg), time.Now).Run(ctx)
		})
		if hubCfg.HTTPS.Enable {
			srv := httpserver.New(httpserver.Options{
				Address:      net.JoinHostPort(hubCfg.HTTPS.Address, strconv.Itoa(int(hubCfg.HTTPS.Port))),
				Bundle:       bundle,
				Kube:         kube,
				CertValidity: certificate.EdgeCertValidity(hubCfg),
				Registerer:   reg,
				Revocation:   revocations,
			})
			g.Go(func() error { return srv.Run(ctx) })
		}
	}
	if addr := cfg.CommonConfig.MonitorServer.BindAddress; addr != "" {
		g.Go(func() error { return metrics.Serve(ctx, addr, reg, nil) })
	}
	g.Go(func() error { return bus.Run(ctx) })
	klog.InfoS("cloudcore started", "modules", cfg.EnabledModules())
	err = g.Wait()
	klog.InfoS("cloudcore stopped", "reason", context.Cause(ctx))
	return err
}
