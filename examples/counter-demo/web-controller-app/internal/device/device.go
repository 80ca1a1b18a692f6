// Package device reads and writes the twin of the counter Device.
//
// The web app owns the desired side of one twin and nothing else: ON and OFF become a JSON patch of
// status.twins[i].desired, guarded by a "test" of status.twins[i].propertyName, so the edge's reported value
// (written concurrently by the device controller) is never replaced and the whole twins list is never
// rewritten. The original demo merge-patched the whole list, with a fake reported value, and skipped commands
// it believed were already applied (counter-demo.md §3.3, §5.4, §7); this package keeps no such state: every
// command reads the Device afresh.
package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
)

// Commands the counter understands as desired values.
const (
	On  = "ON"
	Off = "OFF"
)

// Defaults of a twin that has no value yet, as in the tutorial's STATUS reply.
const (
	defaultDesired  = Off
	defaultReported = "0"
)

// maxAttempts bounds the read-patch cycles of one command: a "test" fails only when the twins list was
// reordered or the twin appeared between our read and our patch, which is rare.
const maxAttempts = 5

// ErrNotFound is returned (wrapped) when the Device does not exist.
var ErrNotFound = errors.New("device not found")

// Status is the STATUS reply of the tutorial: the command (desired) and the count (reported).
type Status struct {
	Status string `json:"status"`
	Value  string `json:"value"`
}

// Twin reads and writes one twin of one Device.
type Twin struct {
	client   client.Client
	key      types.NamespacedName
	property string
	// now stamps desired values; tests replace it.
	now func() time.Time
}

// New returns the twin property of Device namespace/name, accessed through c.
func New(c client.Client, namespace, name, property string) (*Twin, error) {
	switch {
	case c == nil:
		return nil, errors.New("device: nil client")
	case namespace == "" || name == "":
		return nil, fmt.Errorf("device: empty namespace or name (%q/%q)", namespace, name)
	case property == "":
		return nil, errors.New("device: empty property name")
	}
	return &Twin{client: c, key: types.NamespacedName{Namespace: namespace, Name: name}, property: property,
		now: time.Now}, nil
}

// Key names the Device.
func (t *Twin) Key() types.NamespacedName { return t.key }

// Property names the twin.
func (t *Twin) Property() string { return t.property }

func (t *Twin) get(ctx context.Context) (*v1alpha2.Device, error) {
	dev := &v1alpha2.Device{}
	if err := t.client.Get(ctx, t.key, dev); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: %s (apply crds/kubeedge-counter-instance.yaml)", ErrNotFound, t.key)
		}
		return nil, fmt.Errorf("reading device %s: %w", t.key, err)
	}
	return dev, nil
}

// Status returns the twin's desired and reported values; a missing twin or value reads as OFF and "0".
func (t *Twin) Status(ctx context.Context) (Status, error) {
	dev, err := t.get(ctx)
	if err != nil {
		return Status{}, err
	}
	st := Status{Status: defaultDesired, Value: defaultReported}
	if i := twinIndex(dev, t.property); i >= 0 {
		tw := dev.Status.Twins[i]
		if tw.Desired.Value != "" {
			st.Status = tw.Desired.Value
		}
		if tw.Reported.Value != "" {
			st.Value = tw.Reported.Value
		}
	}
	return st, nil
}

// SetDesired writes value as the twin's desired value, touching nothing else. It always writes, even when the
// value is already there: the caller cannot know better than the API server.
func (t *Twin) SetDesired(ctx context.Context, value string) error {
	var lastErr error
	for attempt := range maxAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("setting desired %s of device %s: %w (last error: %w)", t.property, t.key, ctx.Err(), lastErr)
			case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
			}
		}
		dev, err := t.get(ctx)
		if err != nil {
			return err
		}
		patch, err := json.Marshal(t.desiredPatch(dev, value))
		if err != nil {
			return fmt.Errorf("encoding patch: %w", err)
		}
		err = t.client.Patch(ctx, dev, client.RawPatch(types.JSONPatchType, patch))
		if err == nil {
			return nil
		}
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%w: %s", ErrNotFound, t.key)
		}
		if !retriable(err) {
			return fmt.Errorf("patching desired %s of device %s: %w", t.property, t.key, err)
		}
		lastErr = err
	}
	return fmt.Errorf("patching desired %s of device %s: gave up after %d attempts: %w", t.property, t.key, maxAttempts, lastErr)
}

// retriable tells a failed "test" (the API server answers 422 Invalid; a client-side patcher, as in the fake
// client, returns a plain error) or a conflict from an error that a new attempt cannot fix.
func retriable(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return true
	}
	return apierrors.IsConflict(err) || apierrors.IsInvalid(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsTimeout(err)
}

// op is one RFC 6902 operation.
type op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// desiredPatch builds the JSON patch that sets the desired value of the twin as dev shows it.
func (t *Twin) desiredPatch(dev *v1alpha2.Device, value string) []op {
	ts := strconv.FormatInt(t.now().UnixMilli(), 10)
	i := twinIndex(dev, t.property)
	if i < 0 {
		// No such twin: add one with a desired side only. The list may change meanwhile, so this one case
		// is guarded by the whole object's resourceVersion.
		tw := map[string]any{
			"propertyName": t.property,
			"desired":      map[string]any{"value": value, "metadata": map[string]string{"type": "string", "timestamp": ts}},
		}
		ops := []op{{Op: "test", Path: "/metadata/resourceVersion", Value: dev.ResourceVersion}}
		if len(dev.Status.Twins) == 0 {
			return append(ops, op{Op: "add", Path: "/status", Value: map[string]any{"twins": []any{tw}}})
		}
		return append(ops, op{Op: "add", Path: "/status/twins/-", Value: tw})
	}
	base := "/status/twins/" + strconv.Itoa(i)
	ops := []op{{Op: "test", Path: base + "/propertyName", Value: t.property}}
	d := dev.Status.Twins[i].Desired
	if d.Value == "" && d.Metadata == nil {
		// The desired side may be absent altogether; "add" of the whole object works either way.
		return append(ops, op{Op: "add", Path: base + "/desired",
			Value: map[string]any{"value": value, "metadata": map[string]string{"type": "string", "timestamp": ts}}})
	}
	ops = append(ops, op{Op: "add", Path: base + "/desired/value", Value: value})
	if d.Metadata != nil {
		// The tutorial stamps desired values too, but in seconds/1e6; this is Unix milliseconds.
		ops = append(ops, op{Op: "add", Path: base + "/desired/metadata/timestamp", Value: ts})
	}
	return ops
}

func twinIndex(dev *v1alpha2.Device, property string) int {
	for i, tw := range dev.Status.Twins {
		if tw.PropertyName == property {
			return i
		}
	}
	return -1
}
