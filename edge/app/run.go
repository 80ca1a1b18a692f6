package app

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/edge/devicetwin"
	"github.com/tether-edge/tether/edge/edged"
	"github.com/tether-edge/tether/edge/edged/kuberuntime"
	"github.com/tether-edge/tether/edge/edgehub"
	"github.com/tether-edge/tether/edge/eventbus"
	"github.com/tether-edge/tether/edge/metamanager"
	"github.com/tether-edge/tether/edge/metamanager/store"
	"github.com/tether-edge/tether/edge/servicebus"
	"github.com/tether-edge/tether/pkg/apis/componentconfig/edgecore/v1alpha2"
	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/metrics"
)

// Option adjusts how Run assembles edgecore.
type Option func(*runOptions)

type runOptions struct {
	configFile   string
	extraModules func(*beehive.Bus) []beehive.Module
	hubOptions   []edgehub.Option
}

// WithConfigFile names the file cfg came from, so the join token can be erased from it after bootstrap.
func WithConfigFile(path string) Option { return func(o *runOptions) { o.configFile = path } }

// WithModules registers more modules on edgecore's bus; tests use it to stand in for modules of later stages.
func WithModules(f func(*beehive.Bus) []beehive.Module) Option {
	return func(o *runOptions) { o.extraModules = f }
}

// WithHubOptions passes options to EdgeHub (timings in tests).
func WithHubOptions(opts ...edgehub.Option) Option {
	return func(o *runOptions) { o.hubOptions = append(o.hubOptions, opts...) }
}

// Run runs edgecore with a loaded, validated config until ctx is cancelled, and returns nil on a clean shutdown.
func Run(ctx context.Context, cfg *v1alpha2.EdgeCore, opts ...Option) error {
	var o runOptions
	for _, opt := range opts {
		opt(&o)
	}
	node := cfg.NodeName()
	bus := beehive.New(beehive.Options{})
	reg := metrics.NewRegistry()

	hubOpts := append([]edgehub.Option{
		edgehub.WithRegisterer(reg),
		edgehub.WithOnBootstrapped(func() {
			if o.configFile == "" {
				return
			}
			if err := eraseToken(o.configFile); err != nil {
				klog.ErrorS(err, "Certificates obtained, but the join token is still in the config file")
				return
			}
			klog.InfoS("Certificates obtained; join token erased from the config file", "file", o.configFile)
		}),
	}, o.hubOptions...)
	hub, err := edgehub.New(cfg.Modules.EdgeHub, node, bus, hubOpts...)
	if err != nil {
		return fmt.Errorf("edgecore: %w", err)
	}
	// EdgeHub gives up only on errors retrying cannot fix (no credentials, a token for another cloud); edgecore
	// without its link is useless, so that ends the process with the reason rather than idling.
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	mods := []beehive.Module{fatalOnError{Module: hub, fail: fail}}
	m := cfg.Modules
	if m.MetaManager.Enable {
		st, err := store.Open(ctx, cfg.Database.DataSource)
		if err != nil {
			return fmt.Errorf("edgecore: %w", err)
		}
		defer st.Close()
		mm, err := metamanager.New(bus, m.MetaManager, st)
		if err != nil {
			return fmt.Errorf("edgecore: %w", err)
		}
		mods = append(mods, mm)
	}
	if m.DeviceTwin.Enable {
		dt, err := devicetwin.New(bus, m.DeviceTwin, cfg.Database.DataSource, node)
		if err != nil {
			return fmt.Errorf("edgecore: %w", err)
		}
		mods = append(mods, dt)
	}
	if m.EventBus.Enable {
		eb, err := eventbus.New(bus, m.EventBus, cfg.Database.DataSource, node)
		if err != nil {
			return fmt.Errorf("edgecore: %w", err)
		}
		mods = append(mods, eb)
	}
	if m.ServiceBus.Enable {
		sb, err := servicebus.New(bus, m.ServiceBus, servicebus.WithDatabase(cfg.Database.DataSource))
		if err != nil {
			return fmt.Errorf("edgecore: %w", err)
		}
		mods = append(mods, sb)
	}
	if m.Edged.Enable {
		ed, closeRuntime, err := newEdged(m.Edged, bus)
		if err != nil {
			return fmt.Errorf("edgecore: %w", err)
		}
		defer closeRuntime()
		mods = append(mods, ed)
	}
	if o.extraModules != nil {
		mods = append(mods, o.extraModules(bus)...)
	}
	for _, m := range mods {
		if err := bus.Register(m); err != nil {
			return fmt.Errorf("edgecore: registering module %s: %w", m.Name(), err)
		}
	}

	klog.InfoS("edgecore started", "node", node, "modules", cfg.EnabledModules())
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return bus.Run(ctx) })
	if addr := cfg.MetricsServer.BindAddress; addr != "" {
		g.Go(func() error { return metrics.Serve(ctx, addr, reg, nil) })
	}
	err = g.Wait()
	klog.InfoS("edgecore stopped", "reason", context.Cause(ctx))
	var fatal *moduleError
	if errors.As(context.Cause(ctx), &fatal) {
		return fatal
	}
	if err != nil {
		return fmt.Errorf("edgecore: %w", err)
	}
	return nil
}

// newEdged builds Edged on a CRI runtime; the runtime connects lazily, so containerd may start after edgecore.
func newEdged(cfg *v1alpha2.Edged, bus *beehive.Bus) (*edged.Edged, func(), error) {
	k := cfg.TailoredKubeletConfig
	rt, err := kuberuntime.New(kuberuntime.Options{
		Endpoint:        k.ContainerRuntimeEndpoint,
		ImageEndpoint:   k.ImageServiceEndpoint,
		RootDir:         cfg.RootDirectory,
		LogDir:          k.PodLogsDir,
		PodSandboxImage: cfg.PodSandboxImage,
		CgroupParent:    k.CgroupRoot,
		NodeIP:          edged.NodeIP(cfg.NodeIP),
		SeccompDefault:  k.SeccompDefault || cfg.SeccompDefault,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("container runtime at %s: %w", k.ContainerRuntimeEndpoint, err)
	}
	closeRuntime := func() {
		if err := rt.Close(); err != nil {
			klog.ErrorS(err, "Closing the container runtime connection")
		}
	}
	ed, err := edged.New(cfg, bus, rt)
	if err != nil {
		closeRuntime()
		return nil, nil, err
	}
	return ed, closeRuntime, nil
}

// moduleError is a module's reason for giving up.
type moduleError struct {
	module string
	err    error
}

func (e *moduleError) Error() string { return e.module + ": " + e.err.Error() }
func (e *moduleError) Unwrap() error { return e.err }

// fatalOnError ends edgecore when the module's Start fails.
type fatalOnError struct {
	beehive.Module
	fail context.CancelCauseFunc
}

func (f fatalOnError) Start(ctx context.Context) error {
	err := f.Module.Start(ctx)
	if err != nil && ctx.Err() == nil {
		f.fail(&moduleError{module: f.Name(), err: err})
	}
	return err
}
