package resource

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tether-edge/tether/pkg/beehive/model"
)

// ErrMalformed is wrapped by every parse and build error.
var ErrMalformed = errors.New("malformed resource")

// Cloud is a parsed cloud-internal object resource.
type Cloud struct {
	NodeID    string
	Namespace string // NullNamespace for cluster-scoped objects
	Type      string
	Name      string // empty for list forms
}

// Edge is a parsed edge (wire) object resource.
type Edge struct {
	Namespace string // empty only for whole resources like TypeK8sCA
	Type      string
	Name      string // empty for 2-token query/response forms
}

// Device is a parsed device resource.
type Device struct {
	NodeID    string // empty when parsed from the wire form
	Namespace string // empty in the [v1.7] form
	Name      string
	Sub       string // e.g. TypeTwinEdgeUpdated; may be empty
}

// BuildCloud returns node/{nodeID}/{namespace}/{type}[/{name}]. An empty
// namespace means cluster-scoped and becomes NullNamespace.
func BuildCloud(nodeID, namespace, resourceType, name string) (string, error) {
	edge, err := BuildEdge(namespace, resourceType, name)
	if err != nil {
		return "", fmt.Errorf("build cloud resource for node %q: %w", nodeID, err)
	}
	return AddNodePrefix(nodeID, edge)
}

// ParseCloud parses node/{node}/{namespace}/{type}[/{name}]. The whole
// resource node/{node}/k8s/ca.crt parses as Type TypeK8sCA.
func ParseCloud(s string) (Cloud, error) {
	nodeID, rest, err := StripNodePrefix(s)
	if err != nil {
		return Cloud{}, fmt.Errorf("parse cloud resource: %w", err)
	}
	if rest == TypeK8sCA {
		return Cloud{NodeID: nodeID, Type: TypeK8sCA}, nil
	}
	tok := strings.Split(rest, Sep)
	if len(tok) != 2 && len(tok) != 3 {
		return Cloud{}, fmt.Errorf("parse cloud resource %q: %w: want node/{node}/{namespace}/{type}[/{name}]", s, ErrMalformed)
	}
	c := Cloud{NodeID: nodeID, Namespace: tok[0], Type: tok[1]}
	if len(tok) == 3 {
		c.Name = tok[2]
	}
	return c, nil
}

// String formats c without validation.
func (c Cloud) String() string {
	return NodePrefix + Sep + c.NodeID + Sep + c.Edge().String()
}

// Edge drops the node, giving the form sent on the wire.
func (c Cloud) Edge() Edge {
	return Edge{Namespace: c.Namespace, Type: c.Type, Name: c.Name}
}

// ClusterScoped reports whether the namespace token is NullNamespace.
func (c Cloud) ClusterScoped() bool { return c.Namespace == NullNamespace }

// BuildEdge returns {namespace}/{type}[/{name}]; an empty namespace becomes
// NullNamespace.
func BuildEdge(namespace, resourceType, name string) (string, error) {
	if namespace == "" {
		namespace = NullNamespace
	}
	for _, f := range []struct{ what, v string }{{"namespace", namespace}, {"type", resourceType}} {
		if err := checkSegment(f.v); err != nil {
			return "", fmt.Errorf("build resource %s %q: %w", f.what, f.v, err)
		}
	}
	s := namespace + Sep + resourceType
	if name != "" {
		if err := checkSegment(name); err != nil {
			return "", fmt.Errorf("build resource name %q: %w", name, err)
		}
		s += Sep + name
	}
	return s, nil
}

// ParseEdge parses {namespace}/{type}/{name}, or {namespace}/{type} when
// operation is query or response, as the edge meta manager does. TypeK8sCA
// is accepted as a whole resource.
func ParseEdge(s, operation string) (Edge, error) {
	if s == TypeK8sCA {
		return Edge{Type: TypeK8sCA}, nil
	}
	tok := strings.Split(s, Sep)
	if err := checkTokens(tok); err != nil {
		return Edge{}, fmt.Errorf("parse edge resource %q: %w", s, err)
	}
	switch {
	case len(tok) == 3:
		return Edge{Namespace: tok[0], Type: tok[1], Name: tok[2]}, nil
	case len(tok) == 2 && (operation == model.QueryOperation || operation == model.ResponseOperation):
		return Edge{Namespace: tok[0], Type: tok[1]}, nil
	}
	return Edge{}, fmt.Errorf("parse edge resource %q with operation %q: %w: want {namespace}/{type}/{name}, or {namespace}/{type} for query/response",
		s, operation, ErrMalformed)
}

// String formats e without validation.
func (e Edge) String() string {
	if e.Namespace == "" && e.Name == "" {
		return e.Type
	}
	s := e.Namespace + Sep + e.Type
	if e.Name != "" {
		s += Sep + e.Name
	}
	return s
}

// ClusterScoped reports whether the namespace token is NullNamespace.
func (e Edge) ClusterScoped() bool { return e.Namespace == NullNamespace }

// AddNodePrefix turns a resource received from the edge into its
// cloud-internal form: node/{nodeID}/{wire}.
func AddNodePrefix(nodeID, wire string) (string, error) {
	if err := checkSegment(nodeID); err != nil {
		return "", fmt.Errorf("add node prefix to %q: node id %q: %w", wire, nodeID, err)
	}
	if err := checkTokens(strings.Split(wire, Sep)); err != nil {
		return "", fmt.Errorf("add node prefix for node %q: resource %q: %w", nodeID, wire, err)
	}
	return NodePrefix + Sep + nodeID + Sep + wire, nil
}

// StripNodePrefix splits node/{nodeID}/{rest} into the node and the form
// sent to the edge.
func StripNodePrefix(s string) (nodeID, wire string, err error) {
	tok := strings.SplitN(s, Sep, 3)
	if len(tok) != 3 || tok[0] != NodePrefix {
		return "", "", fmt.Errorf("strip node prefix from %q: %w: want node/{node}/...", s, ErrMalformed)
	}
	if err := checkTokens(strings.Split(s, Sep)); err != nil {
		return "", "", fmt.Errorf("strip node prefix from %q: %w", s, err)
	}
	return tok[1], tok[2], nil
}

// NodeID returns the node of a cloud-internal resource, including the bare
// node/{nodeID} form used by connection events.
func NodeID(s string) (string, error) {
	tok := strings.Split(s, Sep)
	if len(tok) < 2 || tok[0] != NodePrefix {
		return "", fmt.Errorf("node id of %q: %w: want node/{node}[/...]", s, ErrMalformed)
	}
	if err := checkTokens(tok); err != nil {
		return "", fmt.Errorf("node id of %q: %w", s, err)
	}
	return tok[1], nil
}

// BuildNode returns node/{nodeID}, the resource of cloudhub connection events.
func BuildNode(nodeID string) (string, error) {
	if err := checkSegment(nodeID); err != nil {
		return "", fmt.Errorf("build node resource for %q: %w", nodeID, err)
	}
	return NodePrefix + Sep + nodeID, nil
}

// BuildMembership returns node/{nodeID}/membership.
func BuildMembership(nodeID string) (string, error) {
	return AddNodePrefix(nodeID, TypeMembership)
}

// BuildDevice returns node/{nodeID}/device/{namespace}/{name}[/{sub}]; an
// empty namespace yields the [v1.7] form node/{nodeID}/device/{name}[/{sub}].
func BuildDevice(nodeID, namespace, name, sub string) (string, error) {
	s := TypeDevice
	if namespace != "" {
		if err := checkSegment(namespace); err != nil {
			return "", fmt.Errorf("build device resource namespace %q: %w", namespace, err)
		}
		s += Sep + namespace
	}
	if err := checkSegment(name); err != nil {
		return "", fmt.Errorf("build device resource name %q: %w", name, err)
	}
	s += Sep + name
	if sub != "" {
		if !isDeviceSub(strings.Split(sub, Sep)) {
			return "", fmt.Errorf("build device resource sub-resource %q: %w: want twin/... or state/...", sub, ErrMalformed)
		}
		s += Sep + sub
	}
	return AddNodePrefix(nodeID, s)
}

// ParseDevice parses node/{node}/device/... or its wire form device/...,
// accepting both {namespace}/{name} and [v1.7] {name} device ids. When both
// readings fit, the namespaced one wins.
func ParseDevice(s string) (Device, error) {
	var d Device
	rest := s
	if strings.HasPrefix(s, NodePrefix+Sep) {
		var err error
		if d.NodeID, rest, err = StripNodePrefix(s); err != nil {
			return Device{}, fmt.Errorf("parse device resource: %w", err)
		}
	}
	tok := strings.Split(rest, Sep)
	if err := checkTokens(tok); err != nil {
		return Device{}, fmt.Errorf("parse device resource %q: %w", s, err)
	}
	if tok[0] != TypeDevice || len(tok) < 2 {
		return Device{}, fmt.Errorf("parse device resource %q: %w: want [node/{node}/]device/[{namespace}/]{name}[/sub]", s, ErrMalformed)
	}
	id := tok[1:]
	switch {
	case len(id) >= 3 && isDeviceSub(id[2:]):
		d.Namespace, d.Name, d.Sub = id[0], id[1], strings.Join(id[2:], Sep)
	case len(id) >= 2 && isDeviceSub(id[1:]):
		d.Name, d.Sub = id[0], strings.Join(id[1:], Sep)
	case len(id) == 2:
		d.Namespace, d.Name = id[0], id[1]
	case len(id) == 1:
		d.Name = id[0]
	default:
		return Device{}, fmt.Errorf("parse device resource %q: %w: unknown sub-resource after device id", s, ErrMalformed)
	}
	return d, nil
}

// ID returns the device id: {namespace}/{name}, or {name} in the [v1.7] form.
func (d Device) ID() string {
	if d.Namespace == "" {
		return d.Name
	}
	return d.Namespace + Sep + d.Name
}

func isDeviceSub(tok []string) bool {
	return len(tok) >= 1 && (tok[0] == "twin" || tok[0] == "state")
}

func checkSegment(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty segment", ErrMalformed)
	case strings.Contains(s, Sep):
		return fmt.Errorf("%w: segment contains %q", ErrMalformed, Sep)
	}
	return nil
}

func checkTokens(tok []string) error {
	for _, t := range tok {
		if t == "" {
			return fmt.Errorf("%w: empty segment", ErrMalformed)
		}
	}
	return nil
}
