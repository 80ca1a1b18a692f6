package edged

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	goruntime "runtime"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/resource"
	"github.com/tether-edge/tether/pkg/version"
)

// Node labels and condition texts.
const (
	LabelEdgeRole = "node-role.kubernetes.io/edge"
	// LabelAgentRole is the second role KubeEdge's edged gives its node, so `kubectl get nodes` shows
	// "agent,edge" as it does for KubeEdge, and selectors written for KubeEdge nodes match.
	LabelAgentRole = "node-role.kubernetes.io/agent"
	ReasonReady    = "EdgeReady"
	MessageReady   = "edgecore is posting ready status"
	// ReasonRuntimeDown is the Ready=False reason when the runtime does not answer.
	ReasonRuntimeDown = "ContainerRuntimeNotReady"
)

// nodeAgent registers the node and reports its status. Its fields other than mu/ip belong to its goroutine.
type nodeAgent struct {
	e     *Edged
	meta  *metaClient
	link  *link
	host  hostInfo
	wakeC chan struct{}

	mu sync.Mutex
	ip string

	conds          map[corev1.NodeConditionType]corev1.NodeCondition
	runtimeVersion string
	failing        bool
}

func newNodeAgent(e *Edged, meta *metaClient, lk *link, host hostInfo) *nodeAgent {
	ip := e.nodeIP
	if ip == "" {
		ip = detectNodeIP()
	}
	return &nodeAgent{e: e, meta: meta, link: lk, host: host, wakeC: make(chan struct{}, 1), ip: ip,
		conds: make(map[corev1.NodeConditionType]corev1.NodeCondition)}
}

// wake makes the agent retry registration or report status now, e.g. after the cloud came back.
func (n *nodeAgent) wake() {
	select {
	case n.wakeC <- struct{}{}:
	default:
	}
}

// hostIP is the node's InternalIP, which pods report as status.hostIP.
func (n *nodeAgent) hostIP() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ip
}

func (n *nodeAgent) run(ctx context.Context) {
	clk := n.e.opts.clock
	if n.e.registerNode && !n.register(ctx) {
		return
	}
	tick := clk.NewTicker(n.e.opts.nodeStatusInterval)
	defer tick.Stop()
	for {
		if n.reportStatus(ctx) && !n.register(ctx) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
		case <-n.wakeC:
		}
	}
}

// register creates the node through the cloud, retrying with back-off until it exists. It returns false only
// when ctx ends. Pods do not wait for it.
func (n *nodeAgent) register(ctx context.Context) bool {
	delay := n.e.opts.retryMin
	res, err := resource.BuildEdge(n.e.namespace, resource.TypeNode, n.e.nodeName)
	if err != nil {
		// New validated nothing of the name; a name with "/" can never be registered.
		klog.ErrorS(err, "Cannot register node", "node", n.e.nodeName)
		<-ctx.Done()
		return false
	}
	for attempt := 1; ; attempt++ {
		node := n.buildNode(ctx)
		_, err := n.meta.request(ctx, res, model.InsertOperation, node)
		n.link.observe(err)
		switch {
		case err == nil:
			klog.InfoS("Node registered", "node", n.e.nodeName, "attempts", attempt)
			return true
		case isAlreadyExists(err):
			// Kubelet merges its labels into an existing node the same way; the cloud answers before the
			// update is applied, so a failure here is only logged.
			_, uerr := n.meta.request(ctx, res, model.UpdateOperation, node)
			klog.InfoS("Node already registered; labels merged", "node", n.e.nodeName, "updateErr", uerr)
			return true
		case attempt == 1:
			klog.InfoS("Node registration failed; retrying with back-off", "node", n.e.nodeName, "err", err)
		default:
			klog.V(4).InfoS("Node registration failed", "node", n.e.nodeName, "attempt", attempt, "err", err)
		}
		if !sleep(ctx, n.e.opts.clock, delay, n.wakeC) {
			return false
		}
		delay = min(2*delay, n.e.opts.nodeStatusInterval)
	}
}

// reportStatus sends the node status once. It returns true when the cloud no longer has the node, so the
// caller registers it again.
func (n *nodeAgent) reportStatus(ctx context.Context) bool {
	status := n.buildStatus(ctx)
	patch, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		klog.ErrorS(err, "Cannot encode node status", "node", n.e.nodeName)
		return false
	}
	res, err := resource.BuildEdge(n.e.namespace, resource.TypeNodePatch, n.e.nodeName)
	if err != nil {
		klog.ErrorS(err, "Cannot report node status", "node", n.e.nodeName)
		return false
	}
	_, err = n.meta.request(ctx, res, model.PatchOperation, string(patch))
	n.link.observe(err)
	switch {
	case err == nil:
		if n.failing {
			klog.InfoS("Node status reported again", "node", n.e.nodeName)
		}
		n.failing = false
	case ctx.Err() != nil:
	case isNotFound(err):
		klog.InfoS("Node is gone from the cloud; registering it again", "node", n.e.nodeName)
		return n.e.registerNode
	case !n.failing:
		// Offline is the normal state of an edge node: say it once per outage.
		klog.InfoS("Node status not reported; retrying every interval", "node", n.e.nodeName, "err", err)
		n.failing = true
	default:
		klog.V(4).InfoS("Node status not reported", "node", n.e.nodeName, "err", err)
	}
	return false
}

func (n *nodeAgent) buildNode(ctx context.Context) *corev1.Node {
	labels := make(map[string]string, len(n.e.labels)+5)
	maps.Copy(labels, n.e.labels)
	labels[LabelEdgeRole] = ""
	labels[LabelAgentRole] = ""
	labels[corev1.LabelHostname] = n.e.nodeName
	labels[corev1.LabelOSStable] = goruntime.GOOS
	labels[corev1.LabelArchStable] = goruntime.GOARCH
	return &corev1.Node{
		TypeMeta:   metav1.TypeMeta{Kind: "Node", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: n.e.nodeName, Labels: labels},
		Status:     n.buildStatus(ctx),
	}
}

// buildStatus is the whole node status. It is sent whole rather than as a diff: the cloud may have changed it
// (NotReady after an outage) and edged cannot read it back, so only a full status is sure to correct it.
func (n *nodeAgent) buildStatus(ctx context.Context) corev1.NodeStatus {
	now := metav1.NewTime(n.e.opts.clock.Now())
	vctx, cancel := context.WithTimeout(ctx, versionTimeout)
	ver, verr := n.e.rt.Version(vctx)
	cancel()
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: ReasonReady, Message: MessageReady}
	if verr != nil {
		ready.Status, ready.Reason = corev1.ConditionFalse, ReasonRuntimeDown
		ready.Message = fmt.Sprintf("container runtime does not answer: %v", verr)
	} else {
		n.runtimeVersion = ver
	}
	conds := []corev1.NodeCondition{
		ready,
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available"},
	}
	for i := range conds {
		c := &conds[i]
		c.LastHeartbeatTime = now
		c.LastTransitionTime = now
		if prev, ok := n.conds[c.Type]; ok && prev.Status == c.Status {
			c.LastTransitionTime = prev.LastTransitionTime
		}
		n.conds[c.Type] = *c
	}

	capacity := corev1.ResourceList{
		corev1.ResourceCPU:  *apiresource.NewQuantity(int64(goruntime.NumCPU()), apiresource.DecimalSI),
		corev1.ResourcePods: *apiresource.NewQuantity(n.e.maxPods, apiresource.DecimalSI),
	}
	if n.host.memoryBytes > 0 {
		capacity[corev1.ResourceMemory] = *apiresource.NewQuantity(n.host.memoryBytes, apiresource.BinarySI)
	}

	ip := n.e.nodeIP
	if ip == "" {
		// DHCP may move the node; kubelet re-detects too.
		if ip = detectNodeIP(); ip == "" {
			ip = n.hostIP()
		}
	}
	n.mu.Lock()
	n.ip = ip
	n.mu.Unlock()
	var addrs []corev1.NodeAddress
	if ip != "" {
		addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeHostName, Address: n.e.nodeName})

	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity.DeepCopy(),
		Conditions:  conds,
		Addresses:   addrs,
		DaemonEndpoints: corev1.NodeDaemonEndpoints{
			KubeletEndpoint: corev1.DaemonEndpoint{Port: n.e.kubeletPort},
		},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               n.host.machineID,
			SystemUUID:              n.host.systemUUID,
			BootID:                  n.host.bootID,
			KernelVersion:           n.host.kernel,
			OSImage:                 n.host.osImage,
			ContainerRuntimeVersion: n.runtimeVersion,
			KubeletVersion:          KubeletVersion + "-tether-" + version.Get().GitVersion,
			OperatingSystem:         goruntime.GOOS,
			Architecture:            goruntime.GOARCH,
		},
	}
}

// sleep waits d on clk, returning early (true) on wake and false when ctx ends.
func sleep(ctx context.Context, clk clock.Clock, d time.Duration, wake <-chan struct{}) bool {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	case <-wake:
		return true
	}
}
