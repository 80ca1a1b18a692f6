// Package fakecri is an in-memory CRI runtime and image service served over a real unix socket, so tests
// exercise the same grpc client code as production. It copies the containerd behaviour that matters to us:
// name reservation per attempt, no hostname with NODE networking, CNI failures without a network, NOTREADY
// sandboxes after a stop, removal only of stopped sandboxes, and images resolved only when present.
package fakecri

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Sandbox is the fake's record of a pod sandbox.
type Sandbox struct {
	ID        string
	Config    *runtimeapi.PodSandboxConfig
	State     runtimeapi.PodSandboxState
	CreatedAt int64
	IP        string
}

// Container is the fake's record of a container.
type Container struct {
	ID          string
	SandboxID   string
	Config      *runtimeapi.ContainerConfig
	ImageRef    string
	State       runtimeapi.ContainerState
	CreatedAt   int64
	StartedAt   int64
	FinishedAt  int64
	ExitCode    int32
	Reason      string
	StopTimeout int64 // seconds asked by the last StopContainer
}

// Server implements runtimeapi.RuntimeServiceServer and runtimeapi.ImageServiceServer.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	now func() time.Time

	mu           sync.Mutex
	seq          int
	sandboxes    map[string]*Sandbox
	containers   map[string]*Container
	images       map[string]*runtimeapi.Image // by tag and by ID
	pullable     map[string]bool
	networkReady bool
	calls        map[string]int
	failures     map[string]error
	stopTimeouts []int64

	grpc *grpc.Server
	done chan struct{}
}

// New returns a fake whose timestamps come from now (shared with the code under test for back-off).
func New(now func() time.Time) *Server {
	if now == nil {
		now = time.Now
	}
	return &Server{
		now:          now,
		sandboxes:    map[string]*Sandbox{},
		containers:   map[string]*Container{},
		images:       map[string]*runtimeapi.Image{},
		pullable:     map[string]bool{},
		networkReady: true,
		calls:        map[string]int{},
		failures:     map[string]error{},
	}
}

// Start serves on a unix socket at path and returns the CRI endpoint ("unix://path").
func (s *Server) Start(path string) (string, error) {
	_ = os.Remove(path)
	lis, err := net.Listen("unix", path)
	if err != nil {
		return "", fmt.Errorf("fakecri: listen on %s: %w", path, err)
	}
	s.grpc = grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s.grpc, s)
	runtimeapi.RegisterImageServiceServer(s.grpc, s)
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		_ = s.grpc.Serve(lis)
	}()
	return "unix://" + path, nil
}

// Stop ends the server and waits for its goroutines.
func (s *Server) Stop() {
	if s.grpc == nil {
		return
	}
	s.grpc.Stop()
	<-s.done
}

// stamp is the clock as it is, ties and jumps backwards included (devices without a real-time clock boot with
// the wrong time): code under test must not rely on creation times to order instances.
func (s *Server) stamp() int64 {
	return s.now().UnixNano()
}

func (s *Server) nextID(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s%04d", prefix, s.seq)
}

// enter counts the call and returns an injected failure, if any.
func (s *Server) enter(method string) error {
	s.calls[method]++
	if err, ok := s.failures[method]; ok {
		delete(s.failures, method)
		return err
	}
	return nil
}

// FailNext makes the next call of method (e.g. "RunPodSandbox") fail with err.
func (s *Server) FailNext(method string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[method] = err
}

// Calls returns how often method was called.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// StopTimeouts returns the timeouts of all StopContainer calls so far, in order.
func (s *Server) StopTimeouts() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.stopTimeouts)
}

// AddImage makes ref present locally and returns its ID.
func (s *Server) AddImage(ref string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addImageLocked(ref)
}

func (s *Server) addImageLocked(ref string) string {
	if img, ok := s.images[ref]; ok {
		return img.Id
	}
	id := fmt.Sprintf("sha256:%064x", len(s.images)+1)
	img := &runtimeapi.Image{Id: id, RepoTags: []string{ref}, Size: 1 << 20, Spec: &runtimeapi.ImageSpec{Image: ref}}
	s.images[ref] = img
	s.images[id] = img
	return id
}

// SetImageUser sets the user present image ref runs as, as containerd reports it from the image config: a
// numeric uid, or a user name (uid nil). Both empty is an image that names no user.
func (s *Server) SetImageUser(ref string, uid *int64, username string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.images[ref]
	if !ok {
		panic("fakecri: SetImageUser of an absent image " + ref)
	}
	// A new message, never a changed one: a response being marshalled may still hold the old.
	img := proto.Clone(old).(*runtimeapi.Image)
	img.Uid, img.Username = nil, username
	if uid != nil {
		img.Uid = &runtimeapi.Int64Value{Value: *uid}
	}
	s.images[img.Id] = img
	for _, tag := range img.RepoTags {
		s.images[tag] = img
	}
}

// SetPullable makes PullImage of ref succeed, as if a registry had it.
func (s *Server) SetPullable(ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pullable[ref] = true
}

// SetNetworkReady sets the NetworkReady condition; without it POD-network sandboxes fail like missing CNI.
func (s *Server) SetNetworkReady(ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.networkReady = ready
}

// ExitContainer makes a running container exit with code.
func (s *Server) ExitContainer(id string, code int32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok || c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return fmt.Errorf("fakecri: container %s is not running", id)
	}
	s.exitLocked(c, code)
	return nil
}

func (s *Server) exitLocked(c *Container, code int32) {
	c.State = runtimeapi.ContainerState_CONTAINER_EXITED
	c.FinishedAt = s.stamp()
	c.ExitCode = code
	c.Reason = "Error"
	if code == 0 {
		c.Reason = "Completed"
	}
}

// Reboot mimics a host reboot: every sandbox is NOTREADY and every running container has exited (containerd
// reports such containers as exited with code 255 and reason Unknown).
func (s *Server) Reboot() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sb := range s.sandboxes {
		sb.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	}
	for _, c := range s.containers {
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			s.exitLocked(c, 255)
			c.Reason = "Unknown"
		}
	}
}

// Sandboxes returns copies of all sandboxes in creation order.
func (s *Server) Sandboxes() []Sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Sandbox
	for _, sb := range s.sandboxes {
		cp := *sb
		cp.Config = proto.Clone(sb.Config).(*runtimeapi.PodSandboxConfig)
		out = append(out, cp)
	}
	slices.SortFunc(out, func(a, b Sandbox) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Containers returns copies of all containers in creation order.
func (s *Server) Containers() []Container {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Container
	for _, c := range s.containers {
		cp := *c
		cp.Config = proto.Clone(c.Config).(*runtimeapi.ContainerConfig)
		out = append(out, cp)
	}
	slices.SortFunc(out, func(a, b Container) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func notFound(what, id string) error {
	return status.Errorf(codes.NotFound, "%s %q: not found", what, id)
}

func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Version reports a containerd-like runtime.
func (s *Server) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("Version"); err != nil {
		return nil, err
	}
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "containerd", RuntimeVersion: "1.6.20-fake", RuntimeApiVersion: "v1"}, nil
}

// Status reports RuntimeReady and NetworkReady.
func (s *Server) Status(context.Context, *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("Status"); err != nil {
		return nil, err
	}
	net := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: s.networkReady}
	if !s.networkReady {
		net.Reason, net.Message = "NetworkPluginNotReady", "Network plugin returns error: cni plugin not initialized"
	}
	return &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true}, net,
	}}}, nil
}

// RunPodSandbox creates a READY sandbox.
func (s *Server) RunPodSandbox(_ context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("RunPodSandbox"); err != nil {
		return nil, err
	}
	cfg := req.GetConfig()
	md := cfg.GetMetadata()
	for _, sb := range s.sandboxes {
		o := sb.Config.GetMetadata()
		if o.GetName() == md.GetName() && o.GetNamespace() == md.GetNamespace() && o.GetUid() == md.GetUid() && o.GetAttempt() == md.GetAttempt() {
			return nil, status.Errorf(codes.Unknown, "failed to reserve sandbox name %q: name is reserved for %q",
				md.GetName()+"_"+md.GetNamespace()+"_"+md.GetUid()+fmt.Sprint("_", md.GetAttempt()), sb.ID)
		}
	}
	network := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork()
	if network == runtimeapi.NamespaceMode_NODE && cfg.GetHostname() != "" {
		return nil, status.Error(codes.Unknown, "failed to create containerd task: failed to create shim task: OCI runtime create failed: "+
			"runc create failed: unable to start container process: unable to set hostname without a private UTS namespace")
	}
	sb := &Sandbox{ID: s.nextID("sb"), Config: proto.Clone(cfg).(*runtimeapi.PodSandboxConfig),
		State: runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: s.stamp()}
	if network == runtimeapi.NamespaceMode_POD {
		if !s.networkReady {
			return nil, status.Error(codes.Unknown, "failed to setup network for sandbox: cni plugin not initialized")
		}
		sb.IP = fmt.Sprintf("10.88.0.%d", s.seq%250+2)
	}
	s.sandboxes[sb.ID] = sb
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: sb.ID}, nil
}

// StopPodSandbox kills the sandbox's containers and makes it NOTREADY.
func (s *Server) StopPodSandbox(_ context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("StopPodSandbox"); err != nil {
		return nil, err
	}
	sb, ok := s.sandboxes[req.GetPodSandboxId()]
	if !ok {
		return nil, notFound("sandbox", req.GetPodSandboxId())
	}
	for _, c := range s.containers {
		if c.SandboxID == sb.ID && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			s.exitLocked(c, 137)
		}
	}
	sb.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// RemovePodSandbox removes a stopped sandbox with its containers.
func (s *Server) RemovePodSandbox(_ context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("RemovePodSandbox"); err != nil {
		return nil, err
	}
	sb, ok := s.sandboxes[req.GetPodSandboxId()]
	if !ok {
		return nil, notFound("sandbox", req.GetPodSandboxId())
	}
	if sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
		return nil, status.Errorf(codes.Unknown, "sandbox container %q is not fully stopped", sb.ID)
	}
	for id, c := range s.containers {
		if c.SandboxID == sb.ID {
			delete(s.containers, id)
		}
	}
	delete(s.sandboxes, sb.ID)
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// PodSandboxStatus reports state and network address.
func (s *Server) PodSandboxStatus(_ context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("PodSandboxStatus"); err != nil {
		return nil, err
	}
	sb, ok := s.sandboxes[req.GetPodSandboxId()]
	if !ok {
		return nil, notFound("sandbox", req.GetPodSandboxId())
	}
	st := &runtimeapi.PodSandboxStatus{
		Id: sb.ID, Metadata: sb.Config.GetMetadata(), State: sb.State, CreatedAt: sb.CreatedAt,
		Labels: sb.Config.GetLabels(), Annotations: sb.Config.GetAnnotations(),
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{
			Options: sb.Config.GetLinux().GetSecurityContext().GetNamespaceOptions()}},
	}
	if sb.IP != "" {
		st.Network = &runtimeapi.PodSandboxNetworkStatus{Ip: sb.IP}
	}
	return &runtimeapi.PodSandboxStatusResponse{Status: st}, nil
}

// ListPodSandbox filters by ID, state and labels.
func (s *Server) ListPodSandbox(_ context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("ListPodSandbox"); err != nil {
		return nil, err
	}
	f := req.GetFilter()
	var items []*runtimeapi.PodSandbox
	for _, sb := range s.sandboxes {
		if f.GetId() != "" && f.GetId() != sb.ID || f.GetState() != nil && f.GetState().GetState() != sb.State ||
			!matches(sb.Config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		items = append(items, &runtimeapi.PodSandbox{Id: sb.ID, Metadata: sb.Config.GetMetadata(), State: sb.State,
			CreatedAt: sb.CreatedAt, Labels: sb.Config.GetLabels(), Annotations: sb.Config.GetAnnotations()})
	}
	return &runtimeapi.ListPodSandboxResponse{Items: items}, nil
}

// CreateContainer creates a container in a READY sandbox from a present image.
func (s *Server) CreateContainer(_ context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("CreateContainer"); err != nil {
		return nil, err
	}
	sb, ok := s.sandboxes[req.GetPodSandboxId()]
	if !ok {
		return nil, notFound("sandbox", req.GetPodSandboxId())
	}
	if sb.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		return nil, status.Errorf(codes.Unknown, "sandbox %q is not running", sb.ID)
	}
	cfg := req.GetConfig()
	img, ok := s.images[cfg.GetImage().GetImage()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "failed to get image %q: not found", cfg.GetImage().GetImage())
	}
	// containerd names containers after the pod, not the sandbox: an attempt number is reserved across all
	// sandboxes of the pod until the container is removed.
	for _, c := range s.containers {
		other := s.sandboxes[c.SandboxID]
		if other != nil && other.Config.GetMetadata().GetUid() == sb.Config.GetMetadata().GetUid() &&
			c.Config.GetMetadata().GetName() == cfg.GetMetadata().GetName() &&
			c.Config.GetMetadata().GetAttempt() == cfg.GetMetadata().GetAttempt() {
			return nil, status.Errorf(codes.Unknown, "failed to reserve container name %q (attempt %d): name is reserved for %q",
				cfg.GetMetadata().GetName(), cfg.GetMetadata().GetAttempt(), c.ID)
		}
	}
	c := &Container{ID: s.nextID("ctr"), SandboxID: sb.ID, Config: proto.Clone(cfg).(*runtimeapi.ContainerConfig),
		ImageRef: img.Id, State: runtimeapi.ContainerState_CONTAINER_CREATED, CreatedAt: s.stamp()}
	s.containers[c.ID] = c
	return &runtimeapi.CreateContainerResponse{ContainerId: c.ID}, nil
}

// StartContainer runs a created container.
func (s *Server) StartContainer(_ context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("StartContainer"); err != nil {
		return nil, err
	}
	c, ok := s.containers[req.GetContainerId()]
	if !ok {
		return nil, notFound("container", req.GetContainerId())
	}
	if c.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		return nil, status.Errorf(codes.Unknown, "container %q is in %s state", c.ID, c.State)
	}
	c.State = runtimeapi.ContainerState_CONTAINER_RUNNING
	c.StartedAt = s.stamp()
	return &runtimeapi.StartContainerResponse{}, nil
}

// StopContainer stops a running container as if it obeyed SIGTERM (exit 143).
func (s *Server) StopContainer(_ context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("StopContainer"); err != nil {
		return nil, err
	}
	c, ok := s.containers[req.GetContainerId()]
	if !ok {
		return nil, notFound("container", req.GetContainerId())
	}
	c.StopTimeout = req.GetTimeout()
	s.stopTimeouts = append(s.stopTimeouts, req.GetTimeout())
	if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING || c.State == runtimeapi.ContainerState_CONTAINER_CREATED {
		s.exitLocked(c, 143)
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

// RemoveContainer removes a container in any state.
func (s *Server) RemoveContainer(_ context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("RemoveContainer"); err != nil {
		return nil, err
	}
	if _, ok := s.containers[req.GetContainerId()]; !ok {
		return nil, notFound("container", req.GetContainerId())
	}
	delete(s.containers, req.GetContainerId())
	return &runtimeapi.RemoveContainerResponse{}, nil
}

// ListContainers filters by ID, sandbox, state and labels.
func (s *Server) ListContainers(_ context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("ListContainers"); err != nil {
		return nil, err
	}
	f := req.GetFilter()
	var out []*runtimeapi.Container
	for _, c := range s.containers {
		if f.GetId() != "" && f.GetId() != c.ID || f.GetPodSandboxId() != "" && f.GetPodSandboxId() != c.SandboxID ||
			f.GetState() != nil && f.GetState().GetState() != c.State || !matches(c.Config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, &runtimeapi.Container{Id: c.ID, PodSandboxId: c.SandboxID, Metadata: c.Config.GetMetadata(),
			Image: c.Config.GetImage(), ImageRef: c.ImageRef, State: c.State, CreatedAt: c.CreatedAt,
			Labels: c.Config.GetLabels(), Annotations: c.Config.GetAnnotations()})
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}

// ContainerStatus reports a container like containerd does.
func (s *Server) ContainerStatus(_ context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("ContainerStatus"); err != nil {
		return nil, err
	}
	c, ok := s.containers[req.GetContainerId()]
	if !ok {
		return nil, notFound("container", req.GetContainerId())
	}
	logPath := c.Config.GetLogPath()
	if sb, ok := s.sandboxes[c.SandboxID]; ok {
		logPath = sb.Config.GetLogDirectory() + "/" + logPath
	}
	return &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{
		Id: c.ID, Metadata: c.Config.GetMetadata(), State: c.State, CreatedAt: c.CreatedAt, StartedAt: c.StartedAt,
		FinishedAt: c.FinishedAt, ExitCode: c.ExitCode, Image: c.Config.GetImage(), ImageRef: c.ImageRef,
		Reason: c.Reason, Labels: c.Config.GetLabels(), Annotations: c.Config.GetAnnotations(),
		Mounts: c.Config.GetMounts(), LogPath: logPath,
	}}, nil
}

// ImageStatus returns the image, or no image when it is not present.
func (s *Server) ImageStatus(_ context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("ImageStatus"); err != nil {
		return nil, err
	}
	return &runtimeapi.ImageStatusResponse{Image: s.images[req.GetImage().GetImage()]}, nil
}

// PullImage succeeds only for images made pullable, like a registry that has them.
func (s *Server) PullImage(_ context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("PullImage"); err != nil {
		return nil, err
	}
	ref := req.GetImage().GetImage()
	if !s.pullable[ref] {
		host, _, _ := strings.Cut(ref, "/")
		return nil, status.Errorf(codes.Unknown, "failed to pull and unpack image %q: failed to resolve reference %q: "+
			"dial tcp: lookup %s: no such host", ref, ref, host)
	}
	return &runtimeapi.PullImageResponse{ImageRef: s.addImageLocked(ref)}, nil
}

// ListImages lists present images.
func (s *Server) ListImages(context.Context, *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("ListImages"); err != nil {
		return nil, err
	}
	var out []*runtimeapi.Image
	for k, img := range s.images {
		if k == img.Id {
			out = append(out, img)
		}
	}
	return &runtimeapi.ListImagesResponse{Images: out}, nil
}
