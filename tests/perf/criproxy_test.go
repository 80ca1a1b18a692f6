//go:build perf

package perf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criProxy sits between edgecore and containerd and records every CRI call with its timing and the pod,
// sandbox or container it concerns: the evidence of where pod start-up time goes. It forwards raw bytes, so
// it adds one unix-socket hop and nothing else.
type criProxy struct {
	Endpoint string

	upstream *grpc.ClientConn
	srv      *grpc.Server

	mu    sync.Mutex
	calls []criCall
}

// criCall is one CRI call as edgecore made it.
type criCall struct {
	Method      string
	Start, End  time.Time
	Err         bool
	UID         string // pod UID (RunPodSandbox, ListPodSandbox/ListContainers filtered by pod)
	SandboxID   string // request or response sandbox
	ContainerID string // request or response container
}

// mutating are the calls that change what runs.
var mutating = []string{"RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "CreateContainer", "StartContainer",
	"StopContainer", "RemoveContainer"}

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// startCRIProxy listens on a new unix socket and forwards to upstream (a unix:// endpoint).
func startCRIProxy(t *testing.T, upstream string) *criProxy {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "tether-cri-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "cri.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(upstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p := &criProxy{Endpoint: "unix://" + sock, upstream: conn}
	p.srv = grpc.NewServer(grpc.UnknownServiceHandler(p.forward), grpc.ForceServerCodec(rawCodec{}))
	go func() { _ = p.srv.Serve(ln) }()
	t.Cleanup(func() {
		p.srv.Stop()
		_ = conn.Close()
	})
	return p
}

// forward handles CRI's unary and server-streaming calls: one request, any number of responses.
func (p *criProxy) forward(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return errors.New("cri proxy: no method")
	}
	call := criCall{Method: path.Base(method), Start: time.Now()}
	defer func() {
		call.End = time.Now()
		p.mu.Lock()
		p.calls = append(p.calls, call)
		p.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ctx = metadata.NewOutgoingContext(ctx, md.Copy())
	}
	var req []byte
	if err := ss.RecvMsg(&req); err != nil {
		call.Err = true
		return err
	}
	call.describeRequest(req)
	cs, err := p.upstream.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method,
		grpc.ForceCodec(rawCodec{}))
	if err != nil {
		call.Err = true
		return err
	}
	if err := cs.SendMsg(&req); err != nil {
		call.Err = true
		return err
	}
	if err := cs.CloseSend(); err != nil {
		call.Err = true
		return err
	}
	for {
		var resp []byte
		err := cs.RecvMsg(&resp)
		if errors.Is(err, io.EOF) {
			ss.SetTrailer(cs.Trailer())
			return nil
		}
		if err != nil {
			call.Err = true
			ss.SetTrailer(cs.Trailer())
			return err
		}
		call.describeResponse(resp)
		if err := ss.SendMsg(&resp); err != nil {
			call.Err = true
			return err
		}
	}
}

func (c *criCall) describeRequest(b []byte) {
	uidOf := func(sel map[string]string) string { return sel["io.kubernetes.pod.uid"] }
	switch c.Method {
	case "RunPodSandbox":
		var r runtimeapi.RunPodSandboxRequest
		if proto.Unmarshal(b, &r) == nil {
			c.UID = r.GetConfig().GetMetadata().GetUid()
		}
	case "CreateContainer":
		var r runtimeapi.CreateContainerRequest
		if proto.Unmarshal(b, &r) == nil {
			c.SandboxID = r.GetPodSandboxId()
		}
	case "StartContainer", "StopContainer", "RemoveContainer", "ContainerStatus":
		// All four requests carry container_id as field 1.
		var r runtimeapi.ContainerStatusRequest
		if proto.Unmarshal(b, &r) == nil {
			c.ContainerID = r.GetContainerId()
		}
	case "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus":
		var r runtimeapi.PodSandboxStatusRequest
		if proto.Unmarshal(b, &r) == nil {
			c.SandboxID = r.GetPodSandboxId()
		}
	case "ListPodSandbox":
		var r runtimeapi.ListPodSandboxRequest
		if proto.Unmarshal(b, &r) == nil {
			c.UID = uidOf(r.GetFilter().GetLabelSelector())
		}
	case "ListContainers":
		var r runtimeapi.ListContainersRequest
		if proto.Unmarshal(b, &r) == nil {
			c.UID = uidOf(r.GetFilter().GetLabelSelector())
		}
	}
}

func (c *criCall) describeResponse(b []byte) {
	switch c.Method {
	case "RunPodSandbox":
		var r runtimeapi.RunPodSandboxResponse
		if proto.Unmarshal(b, &r) == nil {
			c.SandboxID = r.GetPodSandboxId()
		}
	case "CreateContainer":
		var r runtimeapi.CreateContainerResponse
		if proto.Unmarshal(b, &r) == nil {
			c.ContainerID = r.GetContainerId()
		}
	}
}

// Calls returns the calls recorded since the last Reset, in completion order.
func (p *criProxy) Calls() []criCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// Reset forgets the calls recorded so far.
func (p *criProxy) Reset() {
	p.mu.Lock()
	p.calls = nil
	p.mu.Unlock()
}

// podTrace is the runtime side of one pod's start, from the recorded calls.
type podTrace struct {
	FirstCall      time.Time // edged's first CRI call about the pod (reading its state)
	SandboxStart   time.Time
	SandboxEnd     time.Time
	CreateStart    time.Time
	CreateEnd      time.Time
	StartStart     time.Time
	ContainerStart time.Time // StartContainer returned
}

// traces maps pod UID to the first start of its sandbox and container among calls.
func traces(calls []criCall) map[string]*podTrace {
	out := map[string]*podTrace{}
	get := func(uid string) *podTrace {
		if out[uid] == nil {
			out[uid] = &podTrace{}
		}
		return out[uid]
	}
	sandboxUID := map[string]string{}
	containerUID := map[string]string{}
	sorted := slices.Clone(calls)
	slices.SortFunc(sorted, func(a, b criCall) int { return a.Start.Compare(b.Start) })
	for _, c := range sorted {
		if c.Err {
			continue
		}
		switch c.Method {
		case "ListPodSandbox", "ListContainers":
			if c.UID != "" && get(c.UID).FirstCall.IsZero() {
				get(c.UID).FirstCall = c.Start
			}
		case "RunPodSandbox":
			sandboxUID[c.SandboxID] = c.UID
			if tr := get(c.UID); tr.SandboxStart.IsZero() {
				tr.SandboxStart, tr.SandboxEnd = c.Start, c.End
			}
		case "CreateContainer":
			uid := sandboxUID[c.SandboxID]
			if uid == "" {
				continue
			}
			containerUID[c.ContainerID] = uid
			if tr := get(uid); tr.CreateStart.IsZero() {
				tr.CreateStart, tr.CreateEnd = c.Start, c.End
			}
		case "StartContainer":
			uid := containerUID[c.ContainerID]
			if uid == "" {
				continue
			}
			if tr := get(uid); tr.StartStart.IsZero() {
				tr.StartStart, tr.ContainerStart = c.Start, c.End
			}
		}
	}
	return out
}

// maxInFlight is the largest number of calls of method that overlapped in time.
func maxInFlight(calls []criCall, method string) int {
	type edge struct {
		at time.Time
		d  int
	}
	var es []edge
	for _, c := range calls {
		if c.Method == method {
			es = append(es, edge{c.Start, 1}, edge{c.End, -1})
		}
	}
	slices.SortFunc(es, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d // ends before starts at the same instant
	})
	cur, peak := 0, 0
	for _, e := range es {
		cur += e.d
		peak = max(peak, cur)
	}
	return peak
}

// countCalls counts calls by method.
func countCalls(calls []criCall) map[string]int {
	m := map[string]int{}
	for _, c := range calls {
		m[c.Method]++
	}
	return m
}
