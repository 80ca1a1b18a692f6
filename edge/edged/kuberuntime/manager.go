package kuberuntime

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Defaults for Options fields left zero.
const (
	DefaultEndpoint       = "unix:///run/containerd/containerd.sock"
	DefaultLogDir         = "/var/log/pods"
	DefaultCgroupRoot     = "/sys/fs/cgroup"
	DefaultRequestTimeout = 2 * time.Minute
	DefaultBackOffInitial = 10 * time.Second
	DefaultBackOffMax     = 5 * time.Minute
	DefaultBackOffReset   = 10 * time.Minute

	// maxMsgSize matches the kubelet: ListContainers on a busy node exceeds grpc's 4 MiB default.
	maxMsgSize = 16 << 20
)

// Options configures a Manager. Zero values get the defaults above.
type Options struct {
	// Endpoint is the CRI socket, e.g. "unix:///run/tether/containerd.sock"; a bare path is taken as unix.
	Endpoint string
	// ImageEndpoint is the CRI image service socket when it differs from Endpoint.
	ImageEndpoint string
	// RootDir holds the pods' volumes: {RootDir}/pods/{uid}/volumes/{plugin}/{volume}. Required.
	RootDir string
	// LogDir holds container logs: {LogDir}/{namespace}_{name}_{uid}/{container}/{restartCount}.log.
	LogDir string
	// PodSandboxImage must equal containerd's sandbox_image. It is checked (and pulled if missing) before a
	// sandbox is created, so a missing pause image is a clear error rather than a registry pull inside
	// RunPodSandbox. Empty skips the check.
	PodSandboxImage string
	// CgroupParent is the cgroupfs parent of all pods, e.g. "/tether-pods"; a pod lives in
	// {CgroupParent}/pod{uid}. Empty leaves the placement to the runtime (and no pod cgroups to clean).
	CgroupParent string
	// CgroupRoot is where the cgroup hierarchies are mounted; pod cgroups are removed under every one of them.
	CgroupRoot string
	// NodeIP is status.hostIP of every pod and status.podIP of hostNetwork pods.
	NodeIP string
	// NodeAllocatable answers resourceFieldRef for containers without the limit, as the kubelet does.
	NodeAllocatable corev1.ResourceList
	// DefaultImagePullPolicy applies to containers without imagePullPolicy (the API server always sets one;
	// pods from elsewhere may not). Empty means the kubelet rule: Always for ":latest" or untagged images,
	// IfNotPresent otherwise.
	DefaultImagePullPolicy corev1.PullPolicy
	// RuntimeHandler selects a containerd runtime class; empty is the default runtime.
	RuntimeHandler string
	// RequestTimeout bounds each CRI call except StopContainer, which gets the grace period on top.
	RequestTimeout time.Duration
	// Crash back-off: first delay, cap, and how long without a crash before it starts over.
	BackOffInitial, BackOffMax, BackOffReset time.Duration
	// Now is the clock for back-off decisions; it must agree with the runtime's timestamps. time.Now if nil.
	Now func() time.Time
	// SeccompDefault is the kubelet's seccompDefault: containers whose pod and container set no seccompProfile
	// run under the runtime's default profile (RuntimeDefault) instead of unconfined.
	SeccompDefault bool
	// SeccompProfileRoot holds the files of Localhost seccomp profiles; {RootDir}/seccomp if empty, as the
	// kubelet's.
	SeccompProfileRoot string
}

// Manager runs pods on a CRI runtime. It implements Runtime.
type Manager struct {
	opts   Options
	conns  []*grpc.ClientConn
	rt     runtimeapi.RuntimeServiceClient
	img    runtimeapi.ImageServiceClient
	crash  *backOff
	pulls  *backOff
	locks  podLocks
	now    func() time.Time
	nameMu sync.Mutex
	rtName string
	syncMu sync.Mutex
	synced map[types.UID]bool
	// appArmorHost reports whether the host enforces AppArmor (nil) or why not; checked once at start, as the
	// kubelet does, since enabling AppArmor needs a reboot. Tests replace it.
	appArmorHost func() error
}

var _ Runtime = (*Manager)(nil)

// New connects to the CRI runtime lazily: the runtime may start after edgecore, and every call reports its own
// error. Close releases the connection.
func New(opts Options) (*Manager, error) {
	if opts.RootDir == "" {
		return nil, errors.New("kuberuntime: RootDir is required")
	}
	if opts.Endpoint == "" {
		opts.Endpoint = DefaultEndpoint
	}
	if opts.ImageEndpoint == "" {
		opts.ImageEndpoint = opts.Endpoint
	}
	if opts.LogDir == "" {
		opts.LogDir = DefaultLogDir
	}
	if opts.CgroupRoot == "" {
		opts.CgroupRoot = DefaultCgroupRoot
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.BackOffInitial <= 0 {
		opts.BackOffInitial = DefaultBackOffInitial
	}
	if opts.BackOffMax <= 0 {
		opts.BackOffMax = DefaultBackOffMax
	}
	if opts.BackOffReset <= 0 {
		opts.BackOffReset = DefaultBackOffReset
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SeccompProfileRoot == "" {
		opts.SeccompProfileRoot = filepath.Join(opts.RootDir, "seccomp")
	}
	switch opts.DefaultImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return nil, fmt.Errorf("kuberuntime: DefaultImagePullPolicy %q is not Always, IfNotPresent or Never", opts.DefaultImagePullPolicy)
	}
	m := &Manager{
		opts:   opts,
		crash:  newBackOff(opts.BackOffInitial, opts.BackOffMax, opts.BackOffReset),
		pulls:  newBackOff(opts.BackOffInitial, opts.BackOffMax, opts.BackOffReset),
		locks:  podLocks{m: map[types.UID]*podLock{}},
		now:    opts.Now,
		synced: map[types.UID]bool{},
	}
	hostErr := hostAppArmor()
	m.appArmorHost = func() error { return hostErr }
	rtConn, err := dial(opts.Endpoint)
	if err != nil {
		return nil, err
	}
	m.conns = append(m.conns, rtConn)
	imgConn := rtConn
	if opts.ImageEndpoint != opts.Endpoint {
		if imgConn, err = dial(opts.ImageEndpoint); err != nil {
			_ = rtConn.Close()
			return nil, err
		}
		m.conns = append(m.conns, imgConn)
	}
	m.rt = runtimeapi.NewRuntimeServiceClient(rtConn)
	m.img = runtimeapi.NewImageServiceClient(imgConn)
	return m, nil
}

func dial(endpoint string) (*grpc.ClientConn, error) {
	target := endpoint
	if strings.HasPrefix(target, "/") {
		target = "unix://" + target
	}
	if !strings.HasPrefix(target, "unix://") {
		return nil, fmt.Errorf("kuberuntime: CRI endpoint %q: only unix sockets are supported", endpoint)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)))
	if err != nil {
		return nil, fmt.Errorf("kuberuntime: CRI endpoint %q: %w", endpoint, err)
	}
	return conn, nil
}

// Close releases the CRI connections. Containers keep running.
func (m *Manager) Close() error {
	var errs []error
	for _, c := range m.conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Version names the runtime for node status, e.g. "containerd://1.6.20".
func (m *Manager) Version(ctx context.Context) (string, error) {
	ctx, cancel := m.callCtx(ctx)
	defer cancel()
	v, err := m.rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return "", fmt.Errorf("CRI version at %s: %w", m.opts.Endpoint, err)
	}
	m.nameMu.Lock()
	m.rtName = v.GetRuntimeName()
	m.nameMu.Unlock()
	return v.GetRuntimeName() + "://" + v.GetRuntimeVersion(), nil
}

// runtimeName prefixes container IDs in status ("containerd://…"); asked once, since it cannot change under
// a running connection without every container changing too.
func (m *Manager) runtimeName(ctx context.Context) (string, error) {
	m.nameMu.Lock()
	name := m.rtName
	m.nameMu.Unlock()
	if name != "" {
		return name, nil
	}
	if _, err := m.Version(ctx); err != nil {
		return "", err
	}
	m.nameMu.Lock()
	defer m.nameMu.Unlock()
	return m.rtName, nil
}

func (m *Manager) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.opts.RequestTimeout)
}

func isNotFound(err error) bool {
	return status.Code(err) == codes.NotFound
}

func (m *Manager) markSynced(uid types.UID, synced bool) {
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	if synced {
		m.synced[uid] = true
	} else {
		delete(m.synced, uid)
	}
}

func (m *Manager) isSynced(uid types.UID) bool {
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	return m.synced[uid]
}

// podLocks serialises work on one pod between SyncPod/KillPod (serialised per pod by Edged already) and
// GarbageCollect, which walks all pods.
type podLocks struct {
	mu sync.Mutex
	m  map[types.UID]*podLock
}

type podLock struct {
	sync.Mutex
	users int
}

func (l *podLocks) lock(uid types.UID) (unlock func()) {
	l.mu.Lock()
	pl := l.m[uid]
	if pl == nil {
		pl = &podLock{}
		l.m[uid] = pl
	}
	pl.users++
	l.mu.Unlock()
	pl.Lock()
	return func() {
		pl.Unlock()
		l.mu.Lock()
		if pl.users--; pl.users == 0 {
			delete(l.m, uid)
		}
		l.mu.Unlock()
	}
}
